/*
 * config.h - slowlaned's settings: defaults, command line, config file and
 * environment, in one table (config.c). Later sources override earlier
 * ones: defaults < config file < environment < command line; lists
 * (--api-key, --model) accumulate.
 */
#ifndef SLOWLANE_CONFIG_H
#define SLOWLANE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

struct config {
	char listen_host[64];     /* numeric address */
	uint16_t listen_port;     /* 0 = ephemeral */
	char *port_file;          /* write the bound port here, or NULL */
	char *data_dir;
	char *upstream;           /* base URL ending in /v1; NULL = load-test */
	char *upstream_key;
	char **api_keys;          /* NULL-terminated */
	size_t n_api_keys;
	char **models;            /* NULL-terminated */
	size_t n_models;
	uint64_t concurrency;
	uint64_t readers;         /* reader pool threads (reader.h) */
	uint64_t writer_nice;     /* writer nice levels below, with a journal */
	uint64_t job_ttl_ms;
	uint64_t max_attempts;
	uint64_t upstream_timeout_ms;
	uint64_t retry_base_ms;
	uint64_t retry_max_ms;
	uint64_t load_test_delay_ms;
	uint64_t shutdown_grace_ms;
	uint64_t retention_ms;     /* 0 = keep ended jobs forever */
	uint64_t idem_keep_ms;     /* Idempotency-Key records are kept this long */
	uint64_t conn_timeout_ms;
	uint64_t max_connections;
	uint64_t max_body;        /* bytes */
	uint64_t max_response;    /* bytes */
	uint64_t map_size;        /* bytes */
	int log_level;
	uint64_t file_ttl_ms;       /* 0 = files never expire */
	uint64_t batch_max_requests;
	uint64_t batch_max_bytes;
	uint64_t rate_limit;       /* per key per second; 0 = none */
	uint64_t max_queued;       /* unfinished jobs per key; 0 = none */
	int paused;                /* start with dispatch paused (SIGUSR1 resumes) */
	int no_journal;            /* submits commit directly (docs/JOURNAL.md) */
	int webhook_allow_http;    /* flags: 0 or 1 */
	int webhook_allow_private;
	uint64_t webhook_timeout_ms;
	uint64_t webhook_max_age_ms;
	uint64_t webhook_retry_base_ms;
};

enum { CONFIG_OK = 0, CONFIG_EXIT = 1, CONFIG_ERROR = -1 };

/* Fills `c` from defaults, the file named by --config, the environment
 * (SLOWLANE_UPSTREAM_KEY, SLOWLANE_API_KEYS) and argv. Returns CONFIG_OK;
 * CONFIG_EXIT after printing --help or --version (exit 0); CONFIG_ERROR
 * after printing why to stderr (exit 2). */
int config_load(struct config *c, int argc, char **argv);
/* Frees what config_load allocated. */
void config_release(struct config *c);
/* Prints the usage text to `fp`-like stdout. */
void config_usage(void);

#endif
