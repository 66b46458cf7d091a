// Mostly sleeps: WORK_US of busy work, then SLEEP_US of nanosleep, in a loop,
// for SECONDS. Used by the "no false blame" test: its time is almost all
// app.blocked_other, and nothing of it is an isolation cause.
//   sleeper SECONDS [WORK_US=1000] [SLEEP_US=50000]
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: sleeper SECONDS [WORK_US] [SLEEP_US]\n");
    return 2;
  }
  const double seconds = atof(argv[1]);
  const long work_us = argc > 2 ? atol(argv[2]) : 1000;
  const long sleep_us = argc > 3 ? atol(argv[3]) : 50000;
  if (work_us < 0 || sleep_us <= 0) {
    fprintf(stderr, "sleeper: WORK_US must be >= 0 and SLEEP_US > 0\n");
    return 2;
  }
  volatile unsigned long x = 0;
  const double end = now() + seconds;
  while (now() < end) {
    const double work_end = now() + work_us / 1e6;
    while (now() < work_end) {
      for (int i = 0; i < 1000; ++i) x += i;
    }
    struct timespec req = {sleep_us / 1000000, (sleep_us % 1000000) * 1000};
    while (nanosleep(&req, &req) != 0 && errno == EINTR) {
    }
  }
  return 0;
}
