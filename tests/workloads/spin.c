// Busy-loops for a given time in one or more threads, optionally pinned to a
// CPU. Used by the throttle and run-queue tests.
//   spin SECONDS [THREADS] [CPU]   (CPU -1: not pinned)
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double seconds;
static int cpu = -1;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void* spin(void* arg) {
  (void)arg;
  if (cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
  }
  volatile unsigned long x = 0;
  double end = now() + seconds;
  while (now() < end) {
    for (int i = 0; i < 100000; ++i) x += i;
  }
  return NULL;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: spin SECONDS [THREADS] [CPU]\n");
    return 2;
  }
  seconds = atof(argv[1]);
  int threads = argc > 2 ? atoi(argv[2]) : 1;
  cpu = argc > 3 ? atoi(argv[3]) : -1;
  if (threads < 1 || threads > 256) threads = 1;
  pthread_t t[256];
  for (int i = 1; i < threads; ++i) pthread_create(&t[i], NULL, spin, NULL);
  spin(NULL);
  for (int i = 1; i < threads; ++i) pthread_join(t[i], NULL);
  return 0;
}
