// A stranger at the door during start-up: before cdsm_init, a thread of each process keeps
// trying its process's doorbell listener (the abstract Unix socket of its pid) until it
// exists, then opens three connections at once, before the job's own processes connect:
// one sends bytes that are no greeting, one a well-formed greeting without the job's
// secret, one closes at once. The job must still start, compute and answer; the listeners
// log each stranger (the wrapper in meson.build checks the log). Exit status 0 only with
// the right answer.
#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>

#include <cdsm.h>

namespace {

int connect_own()
{
    struct sockaddr_un ua;
    memset(&ua, 0, sizeof ua);
    ua.sun_family = AF_UNIX;
    int len = snprintf(ua.sun_path + 1, sizeof ua.sun_path - 1, "cdsm-doorbell-%u", (unsigned)getpid());
    socklen_t sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)len);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&ua, sl) == 0) return fd;
    if (fd >= 0) close(fd);
    return -1;
}

int strangers_sent = 0;

void *stranger(void *)
{
    int fd[3] = {-1, -1, -1};
    struct timespec nap = {0, 100000};
    for (int tries = 0; tries < 100000 && fd[0] < 0; tries++) { // at most about 10 s
        fd[0] = connect_own();
        if (fd[0] < 0) nanosleep(&nap, nullptr);
    }
    if (fd[0] < 0) return nullptr;
    fd[1] = connect_own();
    fd[2] = connect_own();
    char junk[32];
    memset(junk, 'x', sizeof junk);
    unsigned char greeting[32] = {'c', 'd', 's', 'm', 'b', 'e', 'l', 'l', 0, 0, 0, 0, 1, 0, 0, 0}; // rank 0, version 1
    for (int i = 16; i < 32; i++) greeting[i] = (unsigned char)i; // not the job's secret
    int sent = fd[1] >= 0 && fd[2] >= 0 && write(fd[0], junk, sizeof junk) == (ssize_t)sizeof junk &&
               write(fd[1], greeting, sizeof greeting) == (ssize_t)sizeof greeting;
    if (fd[2] >= 0) close(fd[2]);
    __atomic_store_n(&strangers_sent, sent, __ATOMIC_RELEASE);
    nanosleep(&nap, nullptr);
    for (int i = 0; i < 2; i++)
        if (fd[i] >= 0) close(fd[i]);
    return nullptr;
}

} // namespace

int main(int argc, char **argv)
{
    pthread_t t;
    if (pthread_create(&t, nullptr, stranger, nullptr)) return 2;
    int rc = cdsm_init(&argc, &argv);
    pthread_join(t, nullptr);
    if (rc) {
        fprintf(stderr, "cdsm_init: %s\n", cdsm_last_error());
        return 1;
    }
    int me = cdsm_rank(), n = cdsm_nranks();
    uint64_t *v = nullptr;
    if (cdsm_alloc((size_t)n * 4096 * sizeof *v, (void **)&v)) return 1;
    for (int i = 0; i < 4096; i++) v[(size_t)me * 4096 + (size_t)i] = (uint64_t)(me + 1) * (uint64_t)i;
    if (cdsm_barrier()) return 1;
    uint64_t sum = 0, want = 0;
    for (int r = 0; r < n; r++)
        for (int i = 0; i < 4096; i++) {
            sum += v[(size_t)r * 4096 + (size_t)i];
            want += (uint64_t)(r + 1) * (uint64_t)i;
        }
    if (sum != want) {
        fprintf(stderr, "rank %d: sum %llu, expected %llu\n", me, (unsigned long long)sum, (unsigned long long)want);
        return 1;
    }
    if (me == 0 && !__atomic_load_n(&strangers_sent, __ATOMIC_ACQUIRE)) {
        fprintf(stderr, "rank 0: the stranger could not reach the listener in time\n");
        return 1;
    }
    if (me == 0) printf("answer ok with strangers at the door: %llu\n", (unsigned long long)sum);
    return cdsm_finalize() ? 1 : 0;
}
