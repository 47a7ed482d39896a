/*
 * replay.c - runs a fuzz harness over its corpus without libFuzzer, so
 * every input that once crashed stays a regression test in `make check`
 * (built with any compiler). Usage: replay_NAME DIR; speaks TAP.
 */
#include "config.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t len);

int
main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : CORPUS;
	struct dirent *e;
	int n = 0;
	DIR *d = opendir(dir);

	if (!d) {
		printf("not ok 1 - corpus %s is missing\n1..1\n", dir);
		return 1;
	}
	while ((e = readdir(d))) {
		char path[4096];
		unsigned char *buf;
		long size;
		FILE *fp;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
		fp = fopen(path, "rb");
		if (!fp)
			continue;
		fseek(fp, 0, SEEK_END);
		size = ftell(fp);
		rewind(fp);
		buf = malloc(size > 0 ? (size_t)size : 1);
		if (buf && fread(buf, 1, (size_t)size, fp) == (size_t)size) {
			LLVMFuzzerTestOneInput(buf, (size_t)size);
			printf("ok %d - %s\n", ++n, e->d_name);
			fflush(stdout);
		}
		free(buf);
		fclose(fp);
	}
	closedir(d);
	printf("1..%d\n", n);
	return 0;
}
