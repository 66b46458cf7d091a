// A TCP request/response client: connects once (TCP_NODELAY), then COUNT times writes a
// 100-byte request line, reads until the whole line has come back (the peer echoes), and
// sleeps GAP_US. Each round trip is timed with CLOCK_MONOTONIC. At the end (or on SIGTERM /
// SIGINT, after the round trip in flight) it prints one line to stdout:
//   rtt_ms p50=.. mean=.. max=.. n=.. elapsed_s=..
// (elapsed_s: from the first request to the last reply, so n / elapsed_s is the request rate).
// Used by the VM test's virtio scenario against an echo server behind QEMU's user network.
//   pingpong HOST PORT COUNT [GAP_US=20000]
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { kRequestBytes = 100 };

static volatile sig_atomic_t stop_requested = 0;

static void on_signal(int sig) {
  (void)sig;
  stop_requested = 1;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp_double(const void* a, const void* b) {
  const double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

int main(int argc, char** argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: pingpong HOST PORT COUNT [GAP_US=20000]\n");
    return 2;
  }
  const char* host = argv[1];
  const int port = atoi(argv[2]);
  const long count = atol(argv[3]);
  const long gap_us = argc > 4 ? atol(argv[4]) : 20000;
  if (port <= 0 || port > 65535 || count <= 0 || gap_us < 0) {
    fprintf(stderr, "pingpong: PORT must be 1..65535, COUNT > 0, GAP_US >= 0\n");
    return 2;
  }
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
  if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
    fprintf(stderr, "pingpong: HOST must be an IPv4 address, got %s\n", host);
    return 2;
  }
  // SIGTERM/SIGINT end the loop after the round trip in flight (no SA_RESTART: a blocked read
  // returns EINTR and is finished, so the statistics still get printed).
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);

  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    perror("pingpong: socket");
    return 1;
  }
  if (connect(fd, (struct sockaddr*)&addr, sizeof addr) != 0) {
    fprintf(stderr, "pingpong: connect %s:%d: %s\n", host, port, strerror(errno));
    return 1;
  }
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

  double* rtt = malloc(sizeof(double) * (size_t)count);
  if (!rtt) {
    fprintf(stderr, "pingpong: out of memory\n");
    return 1;
  }
  char req[kRequestBytes], resp[kRequestBytes];
  long n = 0;
  double first = 0, last = 0;
  for (long i = 0; i < count && !stop_requested; ++i) {
    int len = snprintf(req, sizeof req, "pingpong request %ld ", i);
    memset(req + len, 'x', sizeof req - (size_t)len - 1);
    req[sizeof req - 1] = '\n';
    const double t0 = now();
    if (i == 0) first = t0;
    for (size_t off = 0; off < sizeof req;) {
      const ssize_t w = write(fd, req + off, sizeof req - off);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        fprintf(stderr, "pingpong: write (request %ld): %s\n", i, strerror(errno));
        return 1;
      }
      off += (size_t)w;
    }
    for (size_t got = 0; got < sizeof resp;) {
      const ssize_t r = read(fd, resp + got, sizeof resp - got);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) {
        fprintf(stderr, "pingpong: read (request %ld): %s\n", i, strerror(errno));
        return 1;
      }
      if (r == 0) {
        fprintf(stderr, "pingpong: peer closed the connection (request %ld, %zu of %d bytes)\n", i,
                got, kRequestBytes);
        return 1;
      }
      got += (size_t)r;
    }
    last = now();
    if (memcmp(req, resp, sizeof req) != 0) {
      fprintf(stderr, "pingpong: the reply to request %ld is not its echo\n", i);
      return 1;
    }
    rtt[n++] = (last - t0) * 1e3;
    if (gap_us > 0 && i + 1 < count) {
      struct timespec ts = {gap_us / 1000000, (gap_us % 1000000) * 1000};
      while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !stop_requested) {
      }
    }
  }
  close(fd);
  if (n == 0) {
    fprintf(stderr, "pingpong: no round trip completed\n");
    return 1;
  }
  double sum = 0, max = 0;
  for (long i = 0; i < n; ++i) {
    sum += rtt[i];
    if (rtt[i] > max) max = rtt[i];
  }
  qsort(rtt, (size_t)n, sizeof(double), cmp_double);
  const double p50 = n % 2 ? rtt[n / 2] : (rtt[n / 2 - 1] + rtt[n / 2]) / 2;
  printf("rtt_ms p50=%.3f mean=%.3f max=%.3f n=%ld elapsed_s=%.3f\n", p50, sum / n, max, n,
         last - first);
  free(rtt);
  return 0;
}
