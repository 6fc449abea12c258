/* cdsm-netsim: a user-space Ethernet switch for a simulated cluster on one machine.
 *
 * It opens N TAP devices (one port per simulated node; the caller moves each interface
 * into a node's network namespace, the fd keeps working there), learns source MACs,
 * floods broadcast and unknown destinations, and adds a constant one-way delay: every
 * frame is queued with its due time and sent when due, in arrival order. It never
 * busy-polls: it sleeps in epoll_wait() on the tap fds, a timerfd armed for the head of the
 * delay queue, the control socket and a signalfd.
 *
 * Run-time control, one command per connection on the Unix socket STATE/netsim.sock
 * (`cdsm-netsim ctl STATE COMMAND...` is a client): `delay US`, `cut PORT` (frames to and
 * from the port are dropped, neither side is told), `heal PORT`, `stats`.
 * The counters are printed on stderr at exit (SIGTERM, SIGINT). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_PORTS 64
#define MAX_FRAME 65536          /* a tap without IFF_VNET_HDR never hands over more */
#define MAX_QUEUED 8192          /* frames in the delay line; beyond that they are dropped */
#define MAX_MACS 1024
#define MAX_DELAY_US 10000000    /* 10 s: anything longer is surely a typo */
#define READS_PER_WAKE 64        /* per port and wake-up, so one busy port cannot starve others */

struct port {
    int fd;
    char name[IFNAMSIZ];
    bool cut;
    uint64_t rx, tx, dropped;
};

struct frame {
    uint64_t due_ns;
    int in_port;
    uint32_t len;
    unsigned char *data;
};

struct mac_entry {
    unsigned char mac[6];
    int port;
};

static struct port ports[MAX_PORTS];
static int nports;
static uint64_t delay_ns;

/* The delay line: a ring of frames in arrival order. */
static struct frame queue[MAX_QUEUED];
static unsigned q_head, q_len;

static struct mac_entry macs[MAX_MACS];
static int nmacs, mac_next_victim;

static struct {
    uint64_t received, forwarded, delayed, flooded;
    uint64_t dropped_cut, dropped_full, dropped_write, dropped_local;
} st;

static const char *prog = "cdsm-netsim";

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Strict decimal parse: the whole string, no sign, within [lo, hi]. */
static bool parse_uint(const char *s, long lo, long hi, long *out)
{
    if (!s || !*s || *s == '-' || *s == '+')
        return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static int open_tap(const char *name, char *actual)
{
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        die("cannot open /dev/net/tun: %s (needs root and the tun module)", strerror(errno));
    struct ifreq ifr = {0};
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0)
        die("cannot create tap device %s: %s%s", name, strerror(errno),
            errno == EBUSY ? " (a device of that name exists: another netsim running?)" : "");
    snprintf(actual, IFNAMSIZ, "%s", ifr.ifr_name);
    return fd;
}

/* Learn (or move) the source MAC of a frame that came in on `port`. */
static void learn(const unsigned char *mac, int port)
{
    if (mac[0] & 1)
        return;                  /* a multicast source is bogus: never learn it */
    for (int i = 0; i < nmacs; i++)
        if (!memcmp(macs[i].mac, mac, 6)) {
            macs[i].port = port;
            return;
        }
    int slot = nmacs < MAX_MACS ? nmacs++ : (mac_next_victim++ % MAX_MACS);
    memcpy(macs[slot].mac, mac, 6);
    macs[slot].port = port;
}

static int lookup(const unsigned char *mac)
{
    if (mac[0] & 1)
        return -1;               /* broadcast or multicast: flood */
    for (int i = 0; i < nmacs; i++)
        if (!memcmp(macs[i].mac, mac, 6))
            return macs[i].port;
    return -1;
}

static void send_to(int p, const unsigned char *data, uint32_t len)
{
    if (ports[p].cut) {
        ports[p].dropped++;
        st.dropped_cut++;
        return;
    }
    ssize_t n = write(ports[p].fd, data, len);
    if (n == (ssize_t)len) {
        ports[p].tx++;
    } else {
        /* EIO while the interface is down, EAGAIN if its queue is full: count, go on. */
        ports[p].dropped++;
        st.dropped_write++;
    }
}

/* Deliver one frame: to the learned port, or to every other port. The destination is
 * looked up (and a cut checked) when the frame leaves, as on a real wire. */
static void deliver(int in_port, const unsigned char *data, uint32_t len)
{
    int out = lookup(data);
    if (out == in_port) {
        st.dropped_local++;      /* both ends behind the same port: nothing to do */
        return;
    }
    st.forwarded++;
    if (out >= 0) {
        send_to(out, data, len);
        return;
    }
    st.flooded++;
    for (int p = 0; p < nports; p++)
        if (p != in_port)
            send_to(p, data, len);
}

/* The timer wakes us some microseconds after the time it was set for (on this VM about
 * 30 us, whatever the slack). `wake_late_ns` is a running average of that lateness; the
 * timer is set that much before a frame is due, and a frame that is due within it is sent
 * on a timer wake, so frames leave on time on average instead of always late. */
static uint64_t wake_late_ns, timer_at;
#define MAX_LEAD_NS 100000

static void send_due(uint64_t tolerance)
{
    uint64_t now = 0;
    while (q_len) {
        struct frame *f = &queue[q_head];
        if (f->due_ns > now + tolerance && (now = now_ns()) + tolerance < f->due_ns)
            break;
        deliver(f->in_port, f->data, f->len);
        free(f->data);
        q_head = (q_head + 1) % MAX_QUEUED;
        q_len--;
    }
}

static void arm_timer(int tfd)
{
    uint64_t due = 0;
    if (q_len) {
        uint64_t lead = wake_late_ns < delay_ns / 2 ? wake_late_ns : delay_ns / 2;
        due = queue[q_head].due_ns - lead;
    }
    if (due == timer_at)         /* timer_at: the time the timer is set for, 0 = disarmed */
        return;
    timer_at = due;
    struct itimerspec its = {0};
    if (due) {
        its.it_value.tv_sec = (time_t)(due / 1000000000u);
        its.it_value.tv_nsec = (long)(due % 1000000000u);
        if (!its.it_value.tv_sec && !its.it_value.tv_nsec)
            its.it_value.tv_nsec = 1;   /* zero would disarm it */
    }
    if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0)
        die("timerfd_settime: %s", strerror(errno));
}

static void receive(int p, unsigned char *buf)
{
    for (int i = 0; i < READS_PER_WAKE; i++) {
        ssize_t n = read(ports[p].fd, buf, MAX_FRAME);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            die("read from %s: %s", ports[p].name, strerror(errno));
        }
        if (n < 14)
            continue;            /* shorter than an Ethernet header */
        ports[p].rx++;
        st.received++;
        if (ports[p].cut) {
            ports[p].dropped++;
            st.dropped_cut++;
            continue;
        }
        learn(buf + 6, p);
        /* FIFO: with frames already waiting, a new one waits behind them even at delay 0. */
        if (!delay_ns && !q_len) {
            deliver(p, buf, (uint32_t)n);
            continue;
        }
        if (q_len == MAX_QUEUED) {
            ports[p].dropped++;
            st.dropped_full++;
            continue;
        }
        struct frame *f = &queue[(q_head + q_len) % MAX_QUEUED];
        f->data = malloc((size_t)n);
        if (!f->data)
            die("out of memory for a queued frame");
        memcpy(f->data, buf, (size_t)n);
        f->len = (uint32_t)n;
        f->in_port = p;
        f->due_ns = now_ns() + delay_ns;
        q_len++;
        if (delay_ns)
            st.delayed++;
    }
}

static void format_stats(FILE *out)
{
    fprintf(out, "delay_us %" PRIu64 "\nports %d\nqueued %u\ntimer_wake_late_us %.1f\n", delay_ns / 1000, nports,
            q_len, wake_late_ns / 1000.0);
    fprintf(out, "received %" PRIu64 "\nforwarded %" PRIu64 "\ndelayed %" PRIu64 "\nflooded %" PRIu64 "\n",
            st.received, st.forwarded, st.delayed, st.flooded);
    fprintf(out, "dropped_cut %" PRIu64 "\ndropped_queue_full %" PRIu64 "\ndropped_write %" PRIu64
            "\ndropped_same_port %" PRIu64 "\n",
            st.dropped_cut, st.dropped_full, st.dropped_write, st.dropped_local);
    for (int p = 0; p < nports; p++)
        fprintf(out, "port %d %s rx %" PRIu64 " tx %" PRIu64 " dropped %" PRIu64 "%s\n", p, ports[p].name,
                ports[p].rx, ports[p].tx, ports[p].dropped, ports[p].cut ? " cut" : "");
}

/* One command per connection: read a line, answer, close. Answers start with "ok" or
 * "error:". */
static void control(int lfd)
{
    int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0)
        return;
    /* A client that connects and says nothing must not stall the switch. */
    struct timeval tv = {.tv_sec = 1};
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char line[256];
    size_t len = 0;
    while (len < sizeof line - 1) {
        ssize_t n = read(c, line + len, sizeof line - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        if (memchr(line, '\n', len))
            break;
    }
    line[len] = 0;
    line[strcspn(line, "\r\n")] = 0;

    char *reply = NULL;
    size_t reply_len = 0;
    FILE *out = open_memstream(&reply, &reply_len);
    if (!out) {
        close(c);
        return;
    }
    char *save, *cmd = strtok_r(line, " \t", &save), *arg = strtok_r(NULL, " \t", &save);
    char *extra = strtok_r(NULL, " \t", &save);
    long v;
    if (!cmd) {
        fprintf(out, "error: empty command (delay US | cut PORT | heal PORT | stats)\n");
    } else if (!strcmp(cmd, "stats") && !arg) {
        fprintf(out, "ok\n");
        format_stats(out);
    } else if (!strcmp(cmd, "delay") && !extra) {
        if (!parse_uint(arg, 0, MAX_DELAY_US, &v)) {
            fprintf(out, "error: delay wants microseconds, 0..%d, not '%s'\n", MAX_DELAY_US, arg ? arg : "");
        } else {
            delay_ns = (uint64_t)v * 1000;
            fprintf(out, "ok delay %ld us\n", v);
        }
    } else if ((!strcmp(cmd, "cut") || !strcmp(cmd, "heal")) && !extra) {
        if (!parse_uint(arg, 0, nports - 1, &v)) {
            fprintf(out, "error: %s wants a port number 0..%d, not '%s'\n", cmd, nports - 1, arg ? arg : "");
        } else {
            ports[v].cut = !strcmp(cmd, "cut");
            fprintf(out, "ok port %ld %s\n", v, ports[v].cut ? "cut" : "healed");
        }
    } else {
        fprintf(out, "error: unknown command '%s' (delay US | cut PORT | heal PORT | stats)\n", cmd);
    }
    fclose(out);
    for (size_t off = 0; off < reply_len;) {
        ssize_t n = write(c, reply + off, reply_len - off);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    free(reply);
    close(c);
}

static void sock_path(const char *dir, struct sockaddr_un *sa)
{
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    if ((size_t)snprintf(sa->sun_path, sizeof sa->sun_path, "%s/netsim.sock", dir) >= sizeof sa->sun_path)
        die("state folder path too long for a Unix socket: %s", dir);
}

/* cdsm-netsim ctl DIR COMMAND...: send one command, print the answer, exit 0 on "ok". */
static int ctl_main(int argc, char **argv)
{
    if (argc < 4)
        die("usage: %s ctl STATE_DIR COMMAND [ARG]", prog);
    struct sockaddr_un sa;
    sock_path(argv[2], &sa);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        die("cannot reach the switch at %s: %s (is cdsm-netsim running?)", sa.sun_path, strerror(errno));
    char cmd[256];
    size_t len = 0;
    for (int i = 3; i < argc; i++) {
        int n = snprintf(cmd + len, sizeof cmd - len, "%s%s", i > 3 ? " " : "", argv[i]);
        if (n < 0 || (size_t)n >= sizeof cmd - len)
            die("command too long");
        len += (size_t)n;
    }
    cmd[len++] = '\n';
    if (write(fd, cmd, len) != (ssize_t)len)
        die("cannot send the command: %s", strerror(errno));
    char buf[4096], first[8] = {0};
    size_t got = 0;
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        if (got < sizeof first - 1)
            memcpy(first + got, buf, (size_t)n < sizeof first - 1 - got ? (size_t)n : sizeof first - 1 - got);
        got += (size_t)n;
        fwrite(buf, 1, (size_t)n, stdout);
    }
    close(fd);
    if (!got)
        die("the switch closed the connection without an answer");
    return strncmp(first, "ok", 2) ? 1 : 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: %s -n PORTS -s STATE_DIR [-d DELAY_US] [-t TAP_PREFIX] [-D]\n"
            "       %s ctl STATE_DIR {delay US | cut PORT | heal PORT | stats}\n"
            "A user-space Ethernet switch for the simulated cluster (cdsm-simcluster).\n"
            "  -n, --ports N        number of ports (tap devices PREFIX0..PREFIX<N-1>), 2..%d\n"
            "  -s, --state DIR      folder for the control socket netsim.sock and pid file netsim.pid\n"
            "  -d, --delay US       constant one-way delay in microseconds (default 0), 0..%d\n"
            "  -t, --tap-prefix P   tap device name prefix (default cdsmsim)\n"
            "  -D, --daemon         detach once the ports exist (the pid file names the daemon)\n"
            "  -h, --help           this help\n"
            "Needs CAP_NET_ADMIN and /dev/net/tun. Environment: none read.\n"
            "Exit status: 0 stopped by SIGTERM/SIGINT/SIGHUP (counters on stderr), or ctl got \"ok\";\n"
            "1 any other error (the reason is printed) or ctl got an error answer; 2 unknown option.\n",
            prog, prog, MAX_PORTS, MAX_DELAY_US);
}

struct options {
    long ports, delay_us;
    const char *state, *prefix;
    bool daemonize;
};

/* Command line to options; exits on --help (0), an unknown option (2), a bad value (1). */
static void parse_options(int argc, char **argv, struct options *op)
{
    *op = (struct options){.prefix = "cdsmsim"};
    static const struct option opts[] = {
        {"ports", required_argument, 0, 'n'}, {"state", required_argument, 0, 's'},
        {"delay", required_argument, 0, 'd'}, {"tap-prefix", required_argument, 0, 't'},
        {"daemon", no_argument, 0, 'D'},      {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "n:s:d:t:Dh", opts, NULL)) != -1) {
        switch (o) {
        case 'n':
            if (!parse_uint(optarg, 2, MAX_PORTS, &op->ports))
                die("--ports wants a number of ports 2..%d, not '%s'", MAX_PORTS, optarg);
            break;
        case 'd':
            if (!parse_uint(optarg, 0, MAX_DELAY_US, &op->delay_us))
                die("--delay wants microseconds 0..%d, not '%s'", MAX_DELAY_US, optarg);
            break;
        case 's': op->state = optarg; break;
        case 't': op->prefix = optarg; break;
        case 'D': op->daemonize = true; break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind < argc)
        die("unexpected argument '%s' (see --help)", argv[optind]);
    if (!op->ports)
        die("--ports is required (see --help)");
    if (!op->state)
        die("--state is required (see --help)");
    /* The name gets up to two digits; an interface name has at most IFNAMSIZ-1 bytes. */
    if (!*op->prefix || strlen(op->prefix) > IFNAMSIZ - 3 || strpbrk(op->prefix, " /%:"))
        die("--tap-prefix must be 1..%d characters without spaces, '/', '%%' or ':', not '%s'",
            IFNAMSIZ - 3, op->prefix);
    struct stat sb;
    if (stat(op->state, &sb) < 0 || !S_ISDIR(sb.st_mode))
        die("state folder %s does not exist", op->state);
}

/* The control socket STATE/netsim.sock, listening. */
static int listen_control(const char *state, struct sockaddr_un *sa)
{
    sock_path(state, sa);
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (lfd < 0)
        die("socket: %s", strerror(errno));
    unlink(sa->sun_path);         /* a stale socket of a dead netsim */
    if (bind(lfd, (struct sockaddr *)sa, sizeof *sa) < 0 || listen(lfd, 8) < 0)
        die("cannot listen on %s: %s", sa->sun_path, strerror(errno));
    return lfd;
}

static void write_pidfile(const char *pidfile)
{
    FILE *pf = fopen(pidfile, "w");
    if (!pf)
        die("cannot write %s: %s", pidfile, strerror(errno));
    fprintf(pf, "%d\n", (int)getpid());
    fclose(pf);
}

/* Detach. The parent exits only once the ports exist and the pid file is written, so the
 * caller can move the taps right away. */
static void daemonize(const char *pidfile)
{
    int ready[2];
    if (pipe(ready) < 0)
        die("pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid > 0) {
        close(ready[1]);
        char c;
        exit(read(ready[0], &c, 1) == 1 ? 0 : 1);
    }
    close(ready[0]);
    setsid();
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        close(null);
    }
    /* stderr stays: the caller redirects it to a log for the exit counters. */
    write_pidfile(pidfile);
    if (write(ready[1], "r", 1) != 1)
        die("cannot tell the parent we are ready");
    close(ready[1]);
}

/* epoll tags: 0..nports-1 are ports; the others follow. */
enum { TAG_TIMER = MAX_PORTS, TAG_CTL, TAG_SIG };

static int watch_all(int tfd, int lfd, int sfd)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll/timerfd/signalfd: %s", strerror(errno));
    struct epoll_event ev = {.events = EPOLLIN};
    for (int p = 0; p < nports; p++) {
        ev.data.u32 = (uint32_t)p;
        epoll_ctl(ep, EPOLL_CTL_ADD, ports[p].fd, &ev);
    }
    ev.data.u32 = TAG_TIMER;
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);
    ev.data.u32 = TAG_CTL;
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    ev.data.u32 = TAG_SIG;
    epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev);
    return ep;
}

/* The delay timer fired: learn how late wake-ups run; the tolerance for sending early. */
static uint64_t timer_fired(int tfd)
{
    uint64_t expirations;
    if (read(tfd, &expirations, sizeof expirations) <= 0 || !timer_at)
        return 0;
    uint64_t late = now_ns() - timer_at;
    if (late > MAX_LEAD_NS)
        late = MAX_LEAD_NS;   /* a preempted wake-up says nothing about the timer */
    wake_late_ns = (7 * wake_late_ns + late) / 8;
    timer_at = 0;             /* one-shot: it is disarmed now */
    return wake_late_ns < delay_ns / 2 ? wake_late_ns : delay_ns / 2;
}

/* Forward frames until a signal asks us to stop. */
static void run_switch(int ep, int tfd, int lfd, int sfd)
{
    unsigned char *buf = malloc(MAX_FRAME);
    if (!buf)
        die("out of memory");
    bool running = true;
    while (running) {
        struct epoll_event evs[MAX_PORTS + 3];
        int k = epoll_wait(ep, evs, MAX_PORTS + 3, -1);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait: %s", strerror(errno));
        }
        uint64_t tolerance = 0;
        for (int i = 0; i < k; i++) {
            uint32_t tag = evs[i].data.u32;
            if (tag < (uint32_t)nports) {
                receive((int)tag, buf);
            } else if (tag == TAG_TIMER) {
                tolerance = timer_fired(tfd);
            } else if (tag == TAG_CTL) {
                control(lfd);
            } else if (tag == TAG_SIG) {
                struct signalfd_siginfo si;
                if (read(sfd, &si, sizeof si) == (ssize_t)sizeof si)
                    running = false;
            }
        }
        send_due(tolerance);
        arm_timer(tfd);
    }
    free(buf);
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "ctl"))
        return ctl_main(argc, argv);
    struct options op;
    parse_options(argc, argv, &op);

    /* 50 us delays need timers that fire on time, not up to the default 50 us slack later. */
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    nports = (int)op.ports;
    delay_ns = (uint64_t)op.delay_us * 1000;
    for (int p = 0; p < nports; p++) {
        char want[IFNAMSIZ];
        snprintf(want, sizeof want, "%s%d", op.prefix, p);
        ports[p].fd = open_tap(want, ports[p].name);
    }
    struct sockaddr_un sa;
    int lfd = listen_control(op.state, &sa);

    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    sigprocmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);    /* a control client that hangs up early */

    char pidfile[PATH_MAX];
    snprintf(pidfile, sizeof pidfile, "%s/netsim.pid", op.state);
    if (op.daemonize)
        daemonize(pidfile);
    else
        write_pidfile(pidfile);

    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    int sfd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
    if (tfd < 0 || sfd < 0)
        die("epoll/timerfd/signalfd: %s", strerror(errno));
    int ep = watch_all(tfd, lfd, sfd);
    fprintf(stderr, "%s: %d ports (%s0..%s%d), delay %ld us, control %s\n", prog, nports, op.prefix,
            op.prefix, nports - 1, op.delay_us, sa.sun_path);
    run_switch(ep, tfd, lfd, sfd);
    fprintf(stderr, "%s: exiting; counters:\n", prog);
    format_stats(stderr);
    unlink(sa.sun_path);
    unlink(pidfile);
    return 0;
}
