/*
 * The floor side of bench/rpc.ts: the least a client that sleeps while it waits can do per
 * call. The same call mix as bench/rpc_c_client.py (lookup by name, get XML desc, get info),
 * one caller, over a raw unix socket with blocking I/O: packets built once, one write per
 * call, the reply read and its status checked, nothing decoded. Whatever throughput it cannot
 * beat the C client by, no sleeping client can. bench/rpc.ts compiles it (cc -O2) at start.
 *
 * usage: rpc_floor_client SOCKET_PATH NAME...
 *   prints {"ready": true} once connected, then reads one JSON command per line on stdin and
 *   uses only its "seconds" (one caller, one connection), printing one JSON line per round:
 *     {"calls": ..., "seconds": ..., "cpu_us": ...}   (cpu_us: this process, user + system)
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* remote_protocol.x: program, version, and the procedures of the mix. */
enum { PROGRAM = 0x20008086, VERSION = 1 };
enum { PROC_CONNECT_OPEN = 1, PROC_DOMAIN_GET_XML_DESC = 14, PROC_DOMAIN_GET_INFO = 16, PROC_DOMAIN_LOOKUP_BY_NAME = 23 };
enum { HEADER = 28, MAX_PACKET = 1 << 20 };

static int sock;
static uint32_t serial;
static uint8_t reply[MAX_PACKET];

static void die(const char *what) {
  fprintf(stderr, "rpc_floor_client: %s: %s\n", what, errno ? strerror(errno) : "protocol error");
  exit(1);
}

static void put32(uint8_t *p, uint32_t v) {
  p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

static uint32_t get32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* An XDR string at p: length, bytes, zero padding to 4. Returns its encoded size. */
static size_t put_string(uint8_t *p, const char *s) {
  size_t n = strlen(s), padded = (n + 3) & ~(size_t)3;
  put32(p, (uint32_t)n);
  memset(p + 4, 0, padded);
  memcpy(p + 4, s, n);
  return 4 + padded;
}

/* One call: send the header and body, read the whole reply; returns the reply body's size. */
static size_t call(uint32_t proc, const uint8_t *body, size_t body_len) {
  static uint8_t packet[MAX_PACKET];
  size_t len = HEADER + body_len, got = 0;
  uint32_t header[] = { (uint32_t)len, PROGRAM, VERSION, proc, 0 /* call */, ++serial, 0 /* ok */ };
  for (int i = 0; i < 7; i++) put32(packet + 4 * i, header[i]);
  memcpy(packet + HEADER, body, body_len);
  for (size_t sent = 0; sent < len;) {
    ssize_t n = write(sock, packet + sent, len - sent);
    if (n <= 0) die("write");
    sent += (size_t)n;
  }
  for (size_t want = 4; got < want;) {
    ssize_t n = read(sock, reply + got, sizeof reply - got);
    if (n <= 0) die("read");
    got += (size_t)n;
    if (got >= 4) want = get32(reply);
    if (want > sizeof reply) die("reply too large");
  }
  if (get32(reply + 24) != 0) die("call failed");
  return got - HEADER;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static double cpu_us(void) {
  struct rusage r;
  getrusage(RUSAGE_SELF, &r);
  return (r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1e6 + r.ru_utime.tv_usec + r.ru_stime.tv_usec;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: rpc_floor_client SOCKET_PATH NAME...\n");
    return 2;
  }
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  if (strlen(argv[1]) >= sizeof addr.sun_path) die("socket path too long");
  strcpy(addr.sun_path, argv[1]);
  sock = socket(AF_UNIX, SOCK_STREAM, 0);
  if (sock < 0 || connect(sock, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");

  /* CONNECT_OPEN: a remote_string (present) naming the test driver, flags 0. */
  uint8_t open_args[64] = { 0, 0, 0, 1 };
  size_t open_len = 4 + put_string(open_args + 4, "test:///default");
  put32(open_args + open_len, 0);
  call(PROC_CONNECT_OPEN, open_args, open_len + 4);

  /* Per name: the lookup's arguments, and the domain it returns (the reply body is exactly a
   * remote_nonnull_domain) as the start of the other two calls' arguments. */
  int count = argc - 2;
  uint8_t(*lookup)[512] = calloc((size_t)count, 512);
  size_t *lookup_len = calloc((size_t)count, sizeof *lookup_len);
  uint8_t(*dom)[512] = calloc((size_t)count, 512);
  size_t *dom_len = calloc((size_t)count, sizeof *dom_len);
  if (!lookup || !lookup_len || !dom || !dom_len) die("calloc");
  for (int i = 0; i < count; i++) {
    if (strlen(argv[i + 2]) > 256) die("name too long");
    lookup_len[i] = put_string(lookup[i], argv[i + 2]);
    dom_len[i] = call(PROC_DOMAIN_LOOKUP_BY_NAME, lookup[i], lookup_len[i]);
    if (dom_len[i] + 4 > sizeof dom[i]) die("domain too large");
    memcpy(dom[i], reply + HEADER, dom_len[i]);
    put32(dom[i] + dom_len[i], 0); /* GET_XML_DESC's flags */
  }
  printf("{\"ready\": true}\n");
  fflush(stdout);

  char line[256];
  while (fgets(line, sizeof line, stdin)) {
    const char *at = strstr(line, "\"seconds\":");
    double seconds = at ? atof(at + 10) : 0;
    if (seconds <= 0) die("command without seconds");
    double cpu0 = cpu_us(), t0 = now(), stop = t0 + seconds;
    long calls = 0;
    for (int i = 0; now() < stop; i = (i + 1) % count) {
      call(PROC_DOMAIN_LOOKUP_BY_NAME, lookup[i], lookup_len[i]);
      call(PROC_DOMAIN_GET_XML_DESC, dom[i], dom_len[i] + 4);
      call(PROC_DOMAIN_GET_INFO, dom[i], dom_len[i]);
      calls += 3;
    }
    printf("{\"calls\": %ld, \"seconds\": %.6f, \"cpu_us\": %.0f}\n", calls, now() - t0, cpu_us() - cpu0);
    fflush(stdout);
  }
  return 0;
}
