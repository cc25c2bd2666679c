/* The in-guest spawn floor for bench/exec-floor.mjs: N times fork (or vfork,
 * or posix_spawn) + execve of a program + waitpid, timed by the guest's own
 * monotonic clock. Prints one line: "<mode> <median ms> <mean ms>" per mode.
 * With a third argument "sh": the busybox sh loop instead ("sh <ms>").
 * Built static (musl) on the host and copied into the box. */
#define _GNU_SOURCE
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* One busybox sh loop running prog n times, in ms (the sh start and exit included). */
static double sh_loop(int n, const char *prog)
{
	char script[256];
	snprintf(script, sizeof(script), "i=0; while [ $i -lt %d ]; do %s; i=$((i+1)); done", n, prog);
	char *args[] = { "sh", "-c", script, NULL };
	double t0 = now_ms();
	pid_t pid;
	int st;
	if (posix_spawn(&pid, "/bin/sh", NULL, NULL, args, environ) != 0 || waitpid(pid, &st, 0) != pid)
		exit(1);
	return now_ms() - t0;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 100;
	char *prog = argc > 2 ? argv[2] : "/bin/true";
	if (argc > 3 && strcmp(argv[3], "sh") == 0) {
		/* "sh <ms per spawn>": the sh loop of bench/run.mjs timed by this clock,
		 * less an empty loop's time (the shell's own start and exit). */
		double empty[5];
		for (int i = 0; i < 5; i++)
			empty[i] = sh_loop(0, prog);
		qsort(empty, 5, sizeof(double), cmp);
		printf("sh %.3f\n", (sh_loop(n, prog) - empty[2]) / n);
		return 0;
	}
	char *args[] = { prog, NULL };
	double *t = calloc((size_t)n, sizeof(double));
	static const char *modes[] = { "fork", "vfork", "posix_spawn" };
	for (int m = 0; m < 3; m++) {
		double sum = 0;
		for (int i = 0; i < n; i++) {
			double t0 = now_ms();
			pid_t pid;
			if (m == 2) {
				if (posix_spawn(&pid, prog, NULL, NULL, args, environ) != 0)
					return 1;
			} else {
				pid = m == 0 ? fork() : vfork();
				if (pid == 0) {
					execve(prog, args, environ);
					_exit(127);
				}
			}
			int st;
			waitpid(pid, &st, 0);
			if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
				return 2;
			t[i] = now_ms() - t0;
			sum += t[i];
		}
		qsort(t, (size_t)n, sizeof(double), cmp);
		printf("%s %.3f %.3f\n", modes[m], t[n / 2], sum / n);
	}
	return 0;
}
