/*
 * gen_corpus.c - writes the seed corpus of fuzz_request: one valid packed
 * Request per op (a conn byte in front), so the fuzzer starts from every
 * branch of the dispatcher, and a Send and a Recv in the batch form.
 * Usage: fuzz_gen_corpus DIR [WIRE_DIR]
 *
 * With WIRE_DIR, also the batch-form seeds of fuzz_wire (tests/fuzz/
 * corpus_wire: a first byte 0 for a Request, 1 for a Response): a Send
 * carrying Send.batch and a RecvResult carrying RecvResult.batch.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chan.pb-c.h"

static const char *dir;
static int         nwritten;

/* Writes prefix + bytes[0..len) as d/name. */
static void
put_file(const char *d, const char *name, uint8_t prefix, const uint8_t *bytes, size_t len)
{
	char  path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", d, name);
	if ((f = fopen(path, "wb")) == NULL || fwrite(&prefix, 1, 1, f) != 1 ||
	    fwrite(bytes, 1, len, f) != len || fclose(f) != 0) {
		perror(path);
		exit(1);
	}
}

/* A packed Request / Response in a malloc'd buffer. */
static uint8_t *
pack_request(const Chan__V1__Request *req, size_t *len)
{
	uint8_t *buf;

	*len = chan__v1__request__get_packed_size(req);
	if ((buf = malloc(*len + 1)) == NULL) {
		exit(1);
	}
	chan__v1__request__pack(req, buf);
	return (buf);
}

static uint8_t *
pack_response(const Chan__V1__Response *resp, size_t *len)
{
	uint8_t *buf;

	*len = chan__v1__response__get_packed_size(resp);
	if ((buf = malloc(*len + 1)) == NULL) {
		exit(1);
	}
	chan__v1__response__pack(resp, buf);
	return (buf);
}

/*
 * The batch-form seeds of fuzz_wire, as chand and libchan write them (the
 * same bytes: their packers write protobuf-c's field order): a Send of
 * "hello", "" and "abc" in Send.batch, and an answer of three messages,
 * the middle one redelivered with an older seq, in RecvResult.batch.
 */
static void
put_wire_seeds(const char *wdir)
{
	static uint32_t         sizes[3] = { 5, 0, 3 };
	static int64_t          seqs[3] = { 7, -3, 4 };
	static int64_t          times[3] = { 1700000000000000LL, 5, -2 };
	static uint32_t         redel[1] = { 1 };
	Chan__V1__Request       req = CHAN__V1__REQUEST__INIT;
	Chan__V1__Send          send = CHAN__V1__SEND__INIT;
	Chan__V1__Batch         b = CHAN__V1__BATCH__INIT;
	Chan__V1__Response      resp = CHAN__V1__RESPONSE__INIT;
	Chan__V1__RecvResult    rr = CHAN__V1__RECV_RESULT__INIT;
	uint64_t                confirm[2] = { 3, 300 };
	uint8_t                *buf;
	size_t                  len;

	b.has_data = 1;
	b.data.data = (uint8_t *) "helloabc";
	b.data.len = 8;
	b.sizes = sizes;
	b.n_sizes = 3;
	send.name = "q";
	send.has_timeout_ms = 1;
	send.timeout_ms = -1;
	send.batch = &b;
	req.has_id = 1;
	req.id = 9;
	req.has_client = 1;
	req.client = 0x1234;
	req.confirm = confirm;
	req.n_confirm = 2;
	req.op_case = CHAN__V1__REQUEST__OP_SEND;
	req.send = &send;
	buf = pack_request(&req, &len);
	put_file(wdir, "req_send_batchform", 0, buf, len);
	free(buf);

	b.seq_deltas = seqs;
	b.n_seq_deltas = 3;
	b.time_deltas = times;
	b.n_time_deltas = 3;
	b.redelivered = redel;
	b.n_redelivered = 1;
	rr.batch = &b;
	resp.has_id = 1;
	resp.id = 9;
	resp.has_status = 1;
	resp.status = CHAN__V1__STATUS__OK;
	resp.has_delivery = 1;
	resp.delivery = 0xabcdef;
	resp.result_case = CHAN__V1__RESPONSE__RESULT_RECV;
	resp.recv = &rr;
	buf = pack_response(&resp, &len);
	put_file(wdir, "resp_recv_batchform", 1, buf, len);
	free(buf);

	/* The same answer in the list form: what fuzz_wire packs both ways. */
	{
		Chan__V1__Message  ms[3], *mp[3];
		uint64_t           seq = 0, t = 0;
		size_t             off = 0;

		for (int i = 0; i < 3; i++) {
			Chan__V1__Message init = CHAN__V1__MESSAGE__INIT;

			ms[i] = init;
			mp[i] = &ms[i];
			seq += (uint64_t) seqs[i];
			t += (uint64_t) times[i];
			ms[i].has_seq = ms[i].has_time_us = 1;
			ms[i].seq = seq;
			ms[i].time_us = t;
			ms[i].has_data = 1;
			ms[i].data.data = b.data.data + off;
			ms[i].data.len = sizes[i];
			off += sizes[i];
			ms[i].has_redelivered = i == 1;
			ms[i].redelivered = i == 1;
		}
		rr.batch = NULL;
		rr.messages = mp;
		rr.n_messages = 3;
		buf = pack_response(&resp, &len);
		put_file(wdir, "resp_recv_engine_shape", 1, buf, len);
		free(buf);
	}
}

static void
put(const char *name, uint8_t conn, Chan__V1__Request *req)
{
	char     path[512];
	size_t   len;
	uint8_t *buf;
	FILE    *f;

	req->has_id = 1;
	req->id = (uint64_t) nwritten + 1;
	req->has_client = 1;
	req->client = 0x1234;
	len = chan__v1__request__get_packed_size(req);
	if ((buf = malloc(len + 1)) == NULL) {
		exit(1);
	}
	buf[0] = conn;
	chan__v1__request__pack(req, buf + 1);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if ((f = fopen(path, "wb")) == NULL ||
	    fwrite(buf, 1, len + 1, f) != len + 1 || fclose(f) != 0) {
		perror(path);
		exit(1);
	}
	free(buf);
	nwritten++;
}

int
main(int argc, char **argv)
{
	Chan__V1__Request       r;
	Chan__V1__Hello         hello = CHAN__V1__HELLO__INIT;
	Chan__V1__Ping          ping = CHAN__V1__PING__INIT;
	Chan__V1__Stats         stats = CHAN__V1__STATS__INIT;
	Chan__V1__List          list = CHAN__V1__LIST__INIT;
	Chan__V1__Create        create = CHAN__V1__CREATE__INIT;
	Chan__V1__Send          send = CHAN__V1__SEND__INIT;
	Chan__V1__Recv          recv = CHAN__V1__RECV__INIT;
	Chan__V1__RecvAny       rany = CHAN__V1__RECV_ANY__INIT;
	Chan__V1__Close         close_ = CHAN__V1__CLOSE__INIT;
	Chan__V1__Delete        del = CHAN__V1__DELETE__INIT;
	Chan__V1__Stat          stat = CHAN__V1__STAT__INIT;
	Chan__V1__SenderOpen    sopen = CHAN__V1__SENDER_OPEN__INIT;
	Chan__V1__SenderClose   sclose = CHAN__V1__SENDER_CLOSE__INIT;
	Chan__V1__ReceiverOpen  ropen = CHAN__V1__RECEIVER_OPEN__INIT;
	Chan__V1__ReceiverClose rclose = CHAN__V1__RECEIVER_CLOSE__INIT;
	Chan__V1__Ack           ack = CHAN__V1__ACK__INIT;
	Chan__V1__Release       rel = CHAN__V1__RELEASE__INIT;
	Chan__V1__CounterAdd    cadd = CHAN__V1__COUNTER_ADD__INIT;
	int64_t                 cadd_deltas[3] = { 1, -2, INT64_MAX };
	Chan__V1__CounterGet    cget = CHAN__V1__COUNTER_GET__INIT;
	Chan__V1__CounterSet    cset = CHAN__V1__COUNTER_SET__INIT;
	Chan__V1__CounterCas    ccas = CHAN__V1__COUNTER_CAS__INIT;
	Chan__V1__CounterWait   cwait = CHAN__V1__COUNTER_WAIT__INIT;
	Chan__V1__CounterDelete cdel = CHAN__V1__COUNTER_DELETE__INIT;
	Chan__V1__CounterList   clist = CHAN__V1__COUNTER_LIST__INIT;
	ProtobufCBinaryData     data[2] = { { 5, (uint8_t *) "hello" },
		    { 0, (uint8_t *) "" } };
	char                   *names[2] = { "q", "r" };
	static const Chan__V1__Request init = CHAN__V1__REQUEST__INIT;

	Chan__V1__Batch         batch = CHAN__V1__BATCH__INIT;
	uint32_t                bsizes[3] = { 5, 0, 3 };
	Chan__V1__Cancel        cancel = CHAN__V1__CANCEL__INIT;
	uint64_t                cancel_ids[2] = { 8, 9 };

	if (argc != 2 && argc != 3) {
		fprintf(stderr, "usage: %s DIR [WIRE_DIR]\n", argv[0]);
		return (64);
	}
	dir = argv[1];
#define OP(file, conn, CASE, field, val)                                      \
	do {                                                                  \
		r = init;                                                     \
		r.op_case = CHAN__V1__REQUEST__OP_##CASE;                     \
		r.field = &(val);                                             \
		put(file, conn, &r);                                          \
	} while (0)

	hello.has_protocol_version = 1;
	hello.protocol_version = 1;
	OP("hello", 0, HELLO, hello, hello);
	OP("ping", 0, PING, ping, ping);
	OP("stats", 1, STATS, stats, stats);
	OP("list", 1, LIST, list, list);
	create.name = "q";
	create.has_capacity = 1;
	create.capacity = 2;
	OP("create_bounded", 0, CREATE, create, create);
	create.capacity = 0;
	create.name = "r";
	OP("create_rendezvous", 0, CREATE, create, create);
	send.name = "q";
	send.n_data = 2;
	send.data = data;
	OP("send_batch", 1, SEND, send, send);
	recv.name = "q";
	recv.has_max = 1;
	recv.max = 4;
	OP("recv_max", 2, RECV, recv, recv);
	recv.has_lease_ms = 1;
	recv.lease_ms = 10;
	OP("recv_lease", 2, RECV, recv, recv);
	rany.n_names = 2;
	rany.names = names;
	OP("recv_any", 3, RECV_ANY, recv_any, rany);
	close_.name = "q";
	OP("close", 0, CLOSE, close, close_);
	del.name = "q";
	OP("delete", 0, DELETE, delete_, del);
	stat.name = "q";
	OP("stat", 1, STAT, stat, stat);
	sopen.name = "q";
	OP("sender_open", 1, SENDER_OPEN, sender_open, sopen);
	sclose.name = "q";
	sclose.has_sender = 1;
	sclose.sender = 1;
	OP("sender_close", 1, SENDER_CLOSE, sender_close, sclose);
	ropen.name = "q";
	OP("receiver_open", 2, RECEIVER_OPEN, receiver_open, ropen);
	rclose.name = "q";
	rclose.has_receiver = 1;
	rclose.receiver = 1;
	OP("receiver_close", 2, RECEIVER_CLOSE, receiver_close, rclose);
	ack.name = "q";
	ack.has_seq = 1;
	ack.seq = 1;
	OP("ack", 2, ACK, ack, ack);
	rel.name = "q";
	rel.has_seq = 1;
	rel.seq = 1;
	OP("release", 2, RELEASE, release, rel);
	cadd.name = "c";
	cadd.has_delta = 1;
	cadd.delta = 5;
	OP("counter_add", 3, COUNTER_ADD, counter_add, cadd);
	cget.name = "c";
	OP("counter_get", 3, COUNTER_GET, counter_get, cget);
	cset.name = "c";
	cset.has_value = 1;
	cset.value = INT64_MAX;
	OP("counter_set", 3, COUNTER_SET, counter_set, cset);
	ccas.name = "c";
	ccas.has_expected = ccas.has_new_value = 1;
	ccas.expected = 5;
	ccas.new_value = 6;
	OP("counter_cas", 3, COUNTER_CAS, counter_cas, ccas);
	cwait.name = "c";
	cwait.has_op = cwait.has_value = 1;
	cwait.op = CHAN__V1__WAIT_OP__GE;
	cwait.value = 3;
	OP("counter_wait", 3, COUNTER_WAIT, counter_wait, cwait);
	cdel.name = "c";
	OP("counter_delete", 3, COUNTER_DELETE, counter_delete, cdel);
	OP("counter_list", 3, COUNTER_LIST, counter_list, clist);
	/* The batch form (after the others: their ids, so bytes, stay). */
	batch.has_data = 1;
	batch.data.data = (uint8_t *) "helloabc";
	batch.data.len = 8;
	batch.sizes = bsizes;
	batch.n_sizes = 3;
	send = (Chan__V1__Send) CHAN__V1__SEND__INIT;
	send.name = "q";
	send.batch = &batch;
	OP("send_batchform", 1, SEND, send, send);
	recv = (Chan__V1__Recv) CHAN__V1__RECV__INIT;
	recv.name = "q";
	recv.has_max = 1;
	recv.max = 4;
	recv.has_batch = recv.batch = 1;
	recv.has_max_bytes = 1;
	recv.max_bytes = 6;
	OP("recv_batchform", 2, RECV, recv, recv);
	/* Request.cancel, naming the recv_max and recv_lease seeds' ids. */
	cancel.ids = cancel_ids;
	cancel.n_ids = 2;
	OP("cancel", 2, CANCEL, cancel, cancel);
	/* Many adds in one request; the last overflows (all or nothing). */
	cadd.has_delta = 0;
	cadd.n_deltas = 3;
	cadd.deltas = cadd_deltas;
	OP("counter_add_many", 3, COUNTER_ADD, counter_add, cadd);
	/* Request.confirm_part on a ping: the first two of delivery 5. */
	{
		Chan__V1__PartConfirm  pc = CHAN__V1__PART_CONFIRM__INIT;
		Chan__V1__PartConfirm *pcs[1] = { &pc };

		pc.has_delivery = pc.has_taken = 1;
		pc.delivery = 5;
		pc.taken = 2;
		r = init;
		r.n_confirm_part = 1;
		r.confirm_part = pcs;
		r.op_case = CHAN__V1__REQUEST__OP_PING;
		r.ping = &ping;
		put("confirm_part", 2, &r);
	}
	if (argc == 3) {
		put_wire_seeds(argv[2]);
	}
	printf("%d seeds written to %s\n", nwritten, dir);
	return (0);
}
