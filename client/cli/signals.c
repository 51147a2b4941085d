/*
 * signals.c - SIGINT/SIGTERM without losing messages.
 *
 * A blocked libchan call does not return on a signal, so the signals are
 * blocked in every thread and one thread waits for them with sigwait: it
 * notes the signal and cancels the client's calls. The command then prints
 * what it already received, confirms it (chan_disconnect) and exits; what a
 * cancelled call would have received stays with the daemon.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>

#include "cli.h"

static sigset_t     cli_sigs;
static atomic_int   cli_caught;
static pthread_t    cli_sig_thread;
static bool         cli_sig_running;
static chan_client *cli_sig_client;
static bool         cli_sig_blocked; /* only commands that receive watch */

void
cli_signals_block(void)
{
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&cli_sigs);
	sigaddset(&cli_sigs, SIGINT);
	sigaddset(&cli_sigs, SIGTERM);
	sigaddset(&cli_sigs, SIGUSR1); /* wakes the watcher at the end */
	pthread_sigmask(SIG_BLOCK, &cli_sigs, NULL);
	cli_sig_blocked = true;
}

static void *
cli_sig_main(void *arg)
{
	int sig;

	(void) arg;
	for (;;) {
		if (sigwait(&cli_sigs, &sig) != 0) {
			continue;
		}
		if (sig == SIGUSR1) {
			return (NULL);
		}
		atomic_store(&cli_caught, sig);
		chan_cancel(cli_sig_client);
	}
}

void
cli_signals_watch(chan_client *c)
{
	if (!cli_sig_blocked) {
		return;
	}
	cli_sig_client = c;
	if (pthread_create(&cli_sig_thread, NULL, cli_sig_main, NULL) == 0) {
		cli_sig_running = true;
	}
}

int
cli_signals_caught(void)
{
	return (atomic_load(&cli_caught));
}

void
cli_signals_stop(void)
{
	if (cli_sig_running) {
		pthread_kill(cli_sig_thread, SIGUSR1);
		pthread_join(cli_sig_thread, NULL);
		cli_sig_running = false;
	}
}
