/* Appends "<start> <end>" CLOCK_MONOTONIC nanoseconds to FILE: the hand-off
 * benchmark runs it as the locked command. It does nothing else, so start and
 * end bracket the whole life of a locked section. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long long now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv) {
    long long start = now();
    if (argc != 2) return 2;
    int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return 1;
    char line[64];
    int len = snprintf(line, sizeof line, "%lld %lld\n", start, now());
    return write(fd, line, (size_t)len) == len ? 0 : 1;
}
