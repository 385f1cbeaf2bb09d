/* Times several commands side by side: round after round, each command runs
 * once (the order rotates every round), so a machine that speeds up or slows
 * down during the run affects every command alike. Prints one line a run:
 * "<command index> <wall nanoseconds>". Output of the commands goes to
 * /dev/null; a command that fails stops the benchmark.
 *   alternate ROUNDS WARMUP CMD1... [::: CMD2... ...] */
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static long long now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static long long run(char **argv, posix_spawn_file_actions_t *quiet) {
    pid_t pid;
    int status;
    long long start = now();
    if (posix_spawnp(&pid, argv[0], quiet, NULL, argv, environ) != 0) {
        fprintf(stderr, "alternate: cannot start %s\n", argv[0]);
        exit(1);
    }
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "alternate: %s failed\n", argv[0]);
        exit(1);
    }
    return now() - start;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: alternate ROUNDS WARMUP CMD1... [::: CMD2...]\n");
        return 2;
    }
    int rounds = atoi(argv[1]), warmup = atoi(argv[2]);
    char **commands[32];
    int count = 0;
    commands[count++] = &argv[3];
    for (int i = 3; i < argc && count < 32; i++) {
        if (strcmp(argv[i], ":::") == 0) {
            argv[i] = NULL;
            commands[count++] = &argv[i + 1];
        }
    }
    posix_spawn_file_actions_t quiet;
    posix_spawn_file_actions_init(&quiet);
    posix_spawn_file_actions_addopen(&quiet, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&quiet, 2, "/dev/null", O_WRONLY, 0);
    for (int round = 0; round < warmup + rounds; round++) {
        for (int k = 0; k < count; k++) {
            int which = (round + k) % count;
            long long took = run(commands[which], &quiet);
            if (round >= warmup) printf("%d %lld\n", which, took);
        }
    }
    return 0;
}
