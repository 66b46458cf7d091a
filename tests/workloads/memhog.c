// Forces memory-cgroup reclaim without getting OOM-killed: run it in a memory
// cgroup whose limit is well below FILE_MIB. It repeatedly writes FILE_MIB
// through the page cache into FILE (truncating it first), then reads it back,
// so the cgroup keeps hitting its limit and the kernel reclaims its page cache
// (mm_vmscan_memcg_reclaim_begin/end fire in this process's context). Page
// cache is reclaimable without swap, unlike anonymous memory; ANON_MIB of
// anonymous memory (default 8) is also touched each round and kept small.
//   memhog SECONDS FILE [FILE_MIB=256] [ANON_MIB=8]
// FILE must be on a disk file system (not tmpfs: shmem is not reclaimable
// without swap). It is unlinked before exit.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1 << 20)

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: memhog SECONDS FILE [FILE_MIB] [ANON_MIB]\n");
    return 2;
  }
  const double seconds = atof(argv[1]);
  const char* path = argv[2];
  const long file_mib = argc > 3 ? atol(argv[3]) : 256;
  const long anon_mib = argc > 4 ? atol(argv[4]) : 8;
  if (file_mib <= 0 || anon_mib < 0) {
    fprintf(stderr, "memhog: FILE_MIB must be > 0 and ANON_MIB >= 0\n");
    return 2;
  }
  static char buf[CHUNK];
  const double end = now() + seconds;
  unsigned long rounds = 0;
  int rc = 0;
  while (now() < end) {
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
      perror("memhog: open");
      rc = 1;
      break;
    }
    for (long i = 0; i < file_mib && now() < end; ++i) {
      memset(buf, (int)(i + rounds), sizeof(buf));
      if (write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf)) {
        perror("memhog: write");
        rc = 1;
        break;
      }
    }
    if (rc == 0 && lseek(fd, 0, SEEK_SET) == 0) {
      while (now() < end && read(fd, buf, sizeof(buf)) > 0) {
      }
    }
    close(fd);
    if (rc) break;
    if (anon_mib > 0) {
      char* anon = malloc((size_t)anon_mib * CHUNK);
      if (anon) {
        for (long off = 0; off < anon_mib * CHUNK; off += 4096) anon[off] = (char)off;
        free(anon);
      }
    }
    ++rounds;
  }
  unlink(path);
  return rc;
}
