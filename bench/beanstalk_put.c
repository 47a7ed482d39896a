/*
 * beanstalk_put.c - a small beanstalkd put client for the durable-submit
 * comparison: C connections (64 in bench/run), each sending
 * "put <pri> 0 <ttr> <bytes>\r\n<body>\r\n" and waiting for "INSERTED <id>\r\n"
 * before its next put, for D seconds. With `beanstalkd -b DIR -f 0` every
 * put is in the binlog and fsynced before INSERTED comes back.
 *
 *   beanstalk_put --port P [--host 127.0.0.1] [--connections C]
 *                 [--duration S] [--bytes B]
 *
 * One thread, poll(2). Prints one JSON line: {"requests":N,"seconds":S,
 * "rate":R,"errors":E,"p50_ms":..,"p99_ms":..}.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "benchutil.h"

struct conn {
	int fd;
	size_t sent;      /* bytes of the put command written */
	char in[128];     /* the reply being read */
	size_t got;
	uint64_t start_us;
};

static void
usage(void)
{
	fprintf(stderr, "usage: beanstalk_put --port P [--host H] [--connections C] "
	    "[--duration S] [--bytes B]\n");
	exit(2);
}

static int
dial(const char *host, int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

	if (fd < 0 || inet_pton(AF_INET, host, &sa.sin_addr) != 1 ||
	    connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		perror("beanstalk_put: connect");
		exit(1);
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	return fd;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "host", required_argument, NULL, 'h' },
		{ "port", required_argument, NULL, 'p' },
		{ "connections", required_argument, NULL, 'c' },
		{ "duration", required_argument, NULL, 't' },
		{ "bytes", required_argument, NULL, 'b' },
		{ NULL, 0, NULL, 0 },
	};
	const char *host = "127.0.0.1";
	int port = 0, nconn = 64, c;
	double duration = 10;
	size_t bytes = 1024, cmd_len;
	uint64_t done = 0, errors = 0, t0, end, now;
	struct bu_lat lat = { 0 };
	struct conn *cs;
	struct pollfd *pf;
	char *cmd, *body;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'h': host = optarg; break;
		case 'p': port = atoi(optarg); break;
		case 'c': nconn = atoi(optarg); break;
		case 't': duration = strtod(optarg, NULL); break;
		case 'b': bytes = strtoul(optarg, NULL, 10); break;
		default: usage();
		}
	}
	if (port <= 0 || nconn <= 0 || duration <= 0)
		usage();
	body = bu_chat_body(bytes);
	cmd = malloc(bytes + 64);
	cs = calloc((size_t)nconn, sizeof *cs);
	pf = calloc((size_t)nconn, sizeof *pf);
	if (!body || !cmd || !cs || !pf)
		return 1;
	cmd_len = (size_t)sprintf(cmd, "put 1024 0 120 %zu\r\n", strlen(body));
	memcpy(cmd + cmd_len, body, strlen(body));
	cmd_len += strlen(body);
	memcpy(cmd + cmd_len, "\r\n", 2);
	cmd_len += 2;

	t0 = now = bu_now_us();
	end = t0 + (uint64_t)(duration * 1e6);
	for (int i = 0; i < nconn; i++) {
		cs[i].fd = dial(host, port);
		cs[i].start_us = t0;
	}
	while (now < end) {
		for (int i = 0; i < nconn; i++) {
			pf[i].fd = cs[i].fd;
			pf[i].events = cs[i].sent < cmd_len ? POLLOUT : POLLIN;
		}
		if (poll(pf, (nfds_t)nconn, 100) < 0 && errno != EINTR) {
			perror("poll");
			return 1;
		}
		now = bu_now_us();
		for (int i = 0; i < nconn; i++) {
			struct conn *k = &cs[i];
			ssize_t n;

			if (pf[i].revents & (POLLERR | POLLHUP | POLLNVAL)) {
				fprintf(stderr, "beanstalk_put: connection %d closed\n", i);
				return 1;
			}
			if (pf[i].revents & POLLOUT) {
				n = write(k->fd, cmd + k->sent, cmd_len - k->sent);
				if (n > 0)
					k->sent += (size_t)n;
			} else if (pf[i].revents & POLLIN) {
				n = read(k->fd, k->in + k->got, sizeof k->in - 1 - k->got);
				if (n <= 0) {
					fprintf(stderr, "beanstalk_put: connection %d: read failed\n", i);
					return 1;
				}
				k->got += (size_t)n;
				k->in[k->got] = '\0';
				if (!strstr(k->in, "\r\n"))
					continue;
				if (strncmp(k->in, "INSERTED ", 9) == 0) {
					done++;
					bu_lat_add(&lat, now - k->start_us);
				} else {
					errors++;
				}
				k->got = 0;
				k->sent = 0;
				k->start_us = now;
				n = write(k->fd, cmd, cmd_len); /* usually all of it */
				if (n > 0)
					k->sent = (size_t)n;
			}
		}
	}
	bu_lat_sort(&lat);
	double secs = (double)(now - t0) / 1e6;
	printf("{\"requests\":%llu,\"seconds\":%.3f,\"rate\":%.0f,\"errors\":%llu,"
	    "\"p50_ms\":%.3f,\"p99_ms\":%.3f}\n", (unsigned long long)done, secs,
	    (double)done / secs, (unsigned long long)errors, bu_lat_pct(&lat, 50),
	    bu_lat_pct(&lat, 99));
	for (int i = 0; i < nconn; i++)
		close(cs[i].fd);
	free(lat.v);
	free(cs);
	free(pf);
	free(cmd);
	free(body);
	return 0;
}
