/*
 * Sandbox ("pause") process for the local test bed: holds a pod's namespaces open, reaps children
 * that get re-parented to it, and exits when asked to stop. Written for this project.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) {
	(void)sig;
	_exit(0);
}

static void on_child(int sig) {
	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0) {
	}
}

int main(int argc, char **argv) {
	struct sigaction stop, child;
	if (argc > 1 && strcmp(argv[1], "--version") == 0) {
		puts("mousflow-pause 1");
		return 0;
	}
	if (getpid() != 1)
		fputs("pause: warning: not running as PID 1\n", stderr);

	memset(&stop, 0, sizeof stop);
	stop.sa_handler = on_stop;
	sigemptyset(&stop.sa_mask);
	if (sigaction(SIGINT, &stop, NULL) || sigaction(SIGTERM, &stop, NULL))
		return 1;

	memset(&child, 0, sizeof child);
	child.sa_handler = on_child;
	sigemptyset(&child.sa_mask);
	child.sa_flags = SA_NOCLDSTOP | SA_RESTART;
	if (sigaction(SIGCHLD, &child, NULL))
		return 2;

	for (;;)
		pause();
}
