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
/* recv -n / --follow receive through a consumer, on a connection of its own. */
static pthread_mutex_t cli_sig_mtx = PTHREAD_MUTEX_INITIALIZER;
static chan_consumer  *cli_sig_consumer;

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
		pthread_mutex_lock(&cli_sig_mtx);
		chan_consumer_cancel(cli_sig_consumer);
		pthread_mutex_unlock(&cli_sig_mtx);
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

void
cli_signals_watch_consumer(chan_consumer *k)
{
	pthread_mutex_lock(&cli_sig_mtx);
	cli_sig_consumer = k;
	/* A signal that came before the consumer existed still ends it. */
	if (k != NULL && atomic_load(&cli_caught) != 0) {
		chan_consumer_cancel(k);
	}
	pthread_mutex_unlock(&cli_sig_mtx);
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
