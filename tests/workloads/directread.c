// O_DIRECT reads of one block at random aligned offsets of a file or block device, each timed
// with CLOCK_MONOTONIC. Used by the paravirt tests (issue #12): the virtio-blk disks of the VM
// test (tests/vm/guest/scenarios/80-virtioblk.sh) and a file on this host's own disk.
//
//   directread PATH --count N [--block BYTES] [--pause-us U] [--seed S] [--cpu C]
//              [--start-delay-ms MS] [--wait-start-fd FD] [--per-read] [--json]
//
// Offsets are uniform over the whole file/device (multiples of --block, default 4096), from a
// fixed seed so two runs read the same blocks. One read at a time; --pause-us sleeps U µs
// between reads (not counted in the latencies), so the reader spends most of its time asleep
// instead of waiting on the device. --start-delay-ms and --wait-start-fd (read one
// byte or EOF from FD) hold the reads back until a tracer has attached (after the open).
// Output, one line (--json as below, else a human line):
//   {"pid","tid","path","reads","block","pause_us","total_s" (sum of the reads' latencies),
//    "wall_s" (first read to the end), "mean_s","p50_s","p90_s","min_s","max_s",
//    "t_start","t_end" (CLOCK_MONOTONIC seconds), "per_read_s":[...] (with --per-read)}
// Errors (open, size, a short or failed read) print the call and errno on stderr and exit 2.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char* what, const char* path) {
  fprintf(stderr, "directread: %s %s: %s (errno %d)\n", what, path, strerror(errno), errno);
  exit(2);
}

static void usage(void) {
  fprintf(stderr,
          "usage: directread PATH --count N [--block BYTES] [--pause-us U] [--seed S] [--cpu C]\n"
          "                  [--start-delay-ms MS] [--wait-start-fd FD] [--per-read] [--json]\n");
  exit(2);
}

static long num(const char* opt, const char* v, long lo, long hi) {
  char* end;
  errno = 0;
  long x = strtol(v, &end, 10);
  if (errno || *end || end == v || x < lo || x > hi) {
    fprintf(stderr, "directread: %s: expected an integer in [%ld, %ld], got '%s'\n", opt, lo, hi,
            v);
    exit(2);
  }
  return x;
}

static int cmp(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

// xorshift64*: the same offsets for the same seed everywhere.
static uint64_t rng_state;
static uint64_t rng(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545F4914F6CDD1DULL;
}

int main(int argc, char** argv) {
  const char* path = NULL;
  long count = -1, block = 4096, cpu = -1, start_delay_ms = 0, wait_fd = -1, pause_us = 0;
  unsigned long seed = 1;
  int json = 0, per_read = 0;
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--json")) json = 1;
    else if (!strcmp(a, "--per-read")) per_read = 1;
    else if (a[0] != '-' && !path) path = a;
    else if (!v) usage();
    else if (++i, !strcmp(a, "--count")) count = num(a, v, 1, 100000000);
    else if (!strcmp(a, "--block")) block = num(a, v, 512, 1 << 24);
    else if (!strcmp(a, "--pause-us")) pause_us = num(a, v, 0, 60000000);
    else if (!strcmp(a, "--seed")) seed = (unsigned long)num(a, v, 0, 0x7fffffffL);
    else if (!strcmp(a, "--cpu")) cpu = num(a, v, 0, CPU_SETSIZE - 1);
    else if (!strcmp(a, "--start-delay-ms")) start_delay_ms = num(a, v, 0, 3600000);
    else if (!strcmp(a, "--wait-start-fd")) wait_fd = num(a, v, 0, 1 << 20);
    else usage();
  }
  if (!path || count < 1 || block % 512) usage();
  rng_state = seed * 0x9E3779B97F4A7C15ULL + 1;

  if (cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET((int)cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) < 0) die("sched_setaffinity", "");
  }
  int fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
  if (fd < 0) die("open (O_DIRECT)", path);
  struct stat st;
  if (fstat(fd, &st) < 0) die("fstat", path);
  uint64_t size = (uint64_t)st.st_size;
  if (S_ISBLK(st.st_mode) && ioctl(fd, BLKGETSIZE64, &size) < 0) die("ioctl BLKGETSIZE64", path);
  uint64_t blocks = size / (uint64_t)block;
  if (blocks == 0) {
    fprintf(stderr, "directread: %s: smaller than one block (%llu bytes)\n", path,
            (unsigned long long)size);
    return 2;
  }
  void* buf;
  if (posix_memalign(&buf, 4096, (size_t)block)) die("posix_memalign", "");
  double* lat = malloc(sizeof(double) * (size_t)count);
  if (!lat) die("malloc", "");

  if (start_delay_ms > 0) {
    struct timespec ts = {start_delay_ms / 1000, (start_delay_ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
  }
  if (wait_fd >= 0) {
    char c;
    while (read((int)wait_fd, &c, 1) < 0 && errno == EINTR) {
    }
  }

  double total = 0, t_start = now();
  for (long i = 0; i < count; ++i) {
    if (pause_us > 0 && i > 0) {
      struct timespec ts = {pause_us / 1000000, (pause_us % 1000000) * 1000L};
      while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
      }
    }
    off_t off = (off_t)(rng() % blocks) * block;
    double t0 = now();
    ssize_t n = pread(fd, buf, (size_t)block, off);
    double t1 = now();
    if (n != block) {
      if (n < 0) die("pread", path);
      fprintf(stderr, "directread: short read of %s at %lld: %zd bytes\n", path, (long long)off, n);
      return 2;
    }
    lat[i] = t1 - t0;
    total += lat[i];
  }
  double t_end = now();

  double* sorted = malloc(sizeof(double) * (size_t)count);
  if (!sorted) die("malloc", "");
  memcpy(sorted, lat, sizeof(double) * (size_t)count);
  qsort(sorted, (size_t)count, sizeof(double), cmp);
  double p50 = sorted[count / 2], p90 = sorted[(count * 9) / 10 < count ? (count * 9) / 10 : count - 1];
  double mean = total / count;
  if (json) {
    printf("{\"pid\":%d,\"tid\":%ld,\"path\":\"%s\",\"reads\":%ld,\"block\":%ld,\"pause_us\":%ld,"
           "\"total_s\":%.6f,"
           "\"wall_s\":%.6f,\"mean_s\":%.6f,\"p50_s\":%.6f,\"p90_s\":%.6f,\"min_s\":%.6f,"
           "\"max_s\":%.6f,\"t_start\":%.6f,\"t_end\":%.6f",
           getpid(), (long)syscall(SYS_gettid), path, count, block, pause_us, total, t_end - t_start,
           mean,
           p50, p90, sorted[0], sorted[count - 1], t_start, t_end);
    if (per_read) {
      fputs(",\"per_read_s\":[", stdout);
      for (long i = 0; i < count; ++i) printf("%s%.6f", i ? "," : "", lat[i]);
      fputc(']', stdout);
    }
    fputs("}\n", stdout);
  } else {
    printf("directread %s: %ld reads of %ld bytes, total %.4f s, mean %.3f ms, p50 %.3f ms, "
           "p90 %.3f ms, max %.3f ms\n",
           path, count, block, total, mean * 1e3, p50 * 1e3, p90 * 1e3, sorted[count - 1] * 1e3);
  }
  fflush(stdout);
  free(sorted);
  free(lat);
  free(buf);
  close(fd);
  return 0;
}
