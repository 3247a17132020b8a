/*
 * test_loop.c - a host's event source run on a worker (air_worker_attach):
 * the source runs on a worker thread when its fd is readable and on its own
 * timer, requests it submits stay on that thread (callbacks included),
 * detach waits until the source can no longer run, and bad calls are
 * refused. Real mock provider on 127.0.0.1.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "airouter.h"
#include "mock.h"

static void
nap_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

struct src {
    air_t *r;
    int efd;
    atomic_int runs;
    atomic_int submits_left; /* requests to submit from the source */
    atomic_int done_ok;
    atomic_int done_all;
    atomic_int done_same_thread; /* done callbacks on the source's thread */
    atomic_int submit_errors;
    pthread_t thread; /* the thread fn runs on (set on its first run) */
    atomic_int have_thread;
    atomic_int other_thread; /* fn ran on more than one thread */
    int64_t every_ms;        /* what fn returns */
};

static void
on_done(const air_resp_t *resp, void *ud)
{
    struct src *s = ud;
    atomic_fetch_add(&s->done_all, 1);
    if (air_resp_status(resp) == AIR_OK)
        atomic_fetch_add(&s->done_ok, 1);
    if (atomic_load(&s->have_thread) && pthread_equal(pthread_self(), s->thread))
        atomic_fetch_add(&s->done_same_thread, 1);
}

static const char *body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";

static int64_t
src_run(void *ud)
{
    struct src *s = ud;
    if (!atomic_load(&s->have_thread)) {
        s->thread = pthread_self();
        atomic_store(&s->have_thread, 1);
    } else if (!pthread_equal(pthread_self(), s->thread)) {
        atomic_store(&s->other_thread, 1);
    }
    atomic_fetch_add(&s->runs, 1);
    uint64_t v;
    while (read(s->efd, &v, sizeof v) == (ssize_t)sizeof v) {
        for (; v > 0 && atomic_load(&s->submits_left) > 0; v--) {
            atomic_fetch_sub(&s->submits_left, 1);
            air_req_t *q = NULL;
            if (air_req_new(s->r, body, strlen(body), &q, NULL, 0) != AIR_OK ||
                air_req_set_done(q, on_done, s) != AIR_OK || air_submit(s->r, q, NULL) != AIR_OK)
                atomic_fetch_add(&s->submit_errors, 1);
        }
    }
    return s->every_ms;
}

static air_t *router_with_mock_extra(air_mock_t **mock, const char *extra);

static air_t *
router_with_mock(air_mock_t **mock)
{
    return router_with_mock_extra(mock, "");
}

static air_t *
router_with_mock_extra(air_mock_t **mock, const char *extra)
{
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    char err[256];
    assert_int_equal(air_mock_start(&o, mock, err, sizeof err), 0);
    char cfg[512];
    snprintf(cfg, sizeof cfg,
             "{%s\"workers\":2,\"providers\":[{\"name\":\"p\",\"kind\":\"openai\","
             "\"base_url\":\"http://127.0.0.1:%u/v1\"}],\"routes\":[{\"model\":\"m\","
             "\"targets\":[{\"provider\":\"p\",\"model\":\"up\"}]}]}",
             extra, air_mock_port(*mock));
    air_t *r = NULL;
    assert_int_equal(air_new(cfg, &r, err, sizeof err), AIR_OK);
    return r;
}

static void
src_init(struct src *s, air_t *r, int64_t every_ms)
{
    memset(s, 0, sizeof *s);
    s->r = r;
    s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    assert_true(s->efd >= 0);
    s->every_ms = every_ms;
}

static void
test_loop_source_submits_and_callbacks_stay_on_its_thread(void **state)
{
    (void)state;
    air_mock_t *m = NULL;
    air_t *r = router_with_mock(&m);
    assert_int_equal(air_workers(r), 2);
    struct src s;
    src_init(&s, r, -1);
    atomic_store(&s.submits_left, 20);
    assert_int_equal(air_worker_attach(r, 1, s.efd, src_run, &s), AIR_OK);
    uint64_t n = 20;
    assert_int_equal(write(s.efd, &n, sizeof n), (ssize_t)sizeof n);
    for (int i = 0; i < 500 && atomic_load(&s.done_ok) < 20; i++)
        nap_ms(10);
    assert_int_equal(atomic_load(&s.submit_errors), 0);
    assert_int_equal(atomic_load(&s.done_ok), 20);
    assert_int_equal(atomic_load(&s.done_same_thread), 20);
    assert_int_equal(atomic_load(&s.other_thread), 0);
    assert_int_equal(air_worker_detach(r, 1), AIR_OK);
    /* Detached: a readable fd no longer runs it. */
    int runs = atomic_load(&s.runs);
    assert_int_equal(write(s.efd, &n, sizeof n), (ssize_t)sizeof n);
    nap_ms(50);
    assert_int_equal(atomic_load(&s.runs), runs);
    air_free(r, 1000);
    air_mock_stop(m);
    close(s.efd);
}

/* With spin_us the worker busy-polls before sleeping; the host's fd is
 * polled while it spins too, so a source is not starved by spinning. */
static void
test_loop_source_runs_while_the_worker_spins(void **state)
{
    (void)state;
    air_mock_t *m = NULL;
    air_t *r = router_with_mock_extra(&m, "\"spin_us\":200000,");
    struct src s;
    src_init(&s, r, -1);
    atomic_store(&s.submits_left, 10);
    assert_int_equal(air_worker_attach(r, 0, s.efd, src_run, &s), AIR_OK);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int round = 0; round < 10; round++) {
        uint64_t one = 1;
        assert_int_equal(write(s.efd, &one, sizeof one), (ssize_t)sizeof one);
        for (int i = 0; i < 500 && atomic_load(&s.done_all) <= round; i++)
            nap_ms(2);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_int_equal(atomic_load(&s.submit_errors), 0);
    assert_int_equal(atomic_load(&s.done_ok), 10);
    assert_int_equal(atomic_load(&s.done_same_thread), 10);
    /* Each round starts while the worker spins (200 ms after its last
     * request): had the fd waited for the spin to end, 10 rounds would take
     * about 2 s. */
    long ms = (t1.tv_sec - t0.tv_sec) * 1000L + (t1.tv_nsec - t0.tv_nsec) / 1000000L;
    if (ms >= 1000)
        fail_msg("10 rounds took %ld ms: the source waited for the spin", ms);
    assert_int_equal(air_worker_detach(r, 0), AIR_OK);
    air_free(r, 1000);
    air_mock_stop(m);
    close(s.efd);
}

static void
test_loop_source_runs_on_its_timer(void **state)
{
    (void)state;
    air_mock_t *m = NULL;
    air_t *r = router_with_mock(&m);
    struct src s;
    src_init(&s, r, 5);
    assert_int_equal(air_worker_attach(r, 0, s.efd, src_run, &s), AIR_OK);
    nap_ms(200);
    /* Every 5 ms for 200 ms: well above a handful even on a loaded machine,
     * with nothing written to the fd. */
    assert_true(atomic_load(&s.runs) >= 5);
    assert_int_equal(air_worker_detach(r, 0), AIR_OK);
    air_free(r, 1000);
    air_mock_stop(m);
    close(s.efd);
}

static void
test_loop_bad_calls_are_refused(void **state)
{
    (void)state;
    air_mock_t *m = NULL;
    air_t *r = router_with_mock(&m);
    struct src s;
    src_init(&s, r, -1);
    assert_int_equal(air_worker_attach(r, 2, s.efd, src_run, &s), AIR_E_INVAL);
    assert_int_equal(air_worker_attach(r, 0, -1, src_run, &s), AIR_E_INVAL);
    assert_int_equal(air_worker_attach(r, 0, s.efd, NULL, &s), AIR_E_INVAL);
    assert_int_equal(air_worker_attach(NULL, 0, s.efd, src_run, &s), AIR_E_INVAL);
    assert_int_equal(air_worker_detach(r, 0), AIR_E_INVAL); /* none attached */
    assert_int_equal(air_worker_attach(r, 0, s.efd, src_run, &s), AIR_OK);
    assert_int_equal(air_worker_attach(r, 0, s.efd, src_run, &s), AIR_E_BUSY);
    assert_int_equal(air_worker_detach(r, 0), AIR_OK);
    assert_int_equal(air_worker_detach(r, 0), AIR_E_INVAL);
    /* Attach again after a detach. */
    assert_int_equal(air_worker_attach(r, 0, s.efd, src_run, &s), AIR_OK);
    assert_int_equal(air_worker_detach(r, 0), AIR_OK);
    assert_int_equal(air_workers(NULL), 0);
    air_free(r, 1000);
    air_mock_stop(m);
    close(s.efd);
}

/* Requests a source submitted and that are still queued or in flight when
 * the router is freed complete once, with "shutdown" past the drain. */
static void
test_loop_free_completes_locally_queued_requests(void **state)
{
    (void)state;
    air_mock_opts_t o;
    air_mock_opts_init(&o);
    o.latency_ms = 2000;
    air_mock_t *m = NULL;
    char err[256];
    assert_int_equal(air_mock_start(&o, &m, err, sizeof err), 0);
    char cfg[512];
    snprintf(cfg, sizeof cfg,
             "{\"workers\":1,\"max_inflight\":1,\"providers\":[{\"name\":\"p\",\"kind\":"
             "\"openai\",\"base_url\":\"http://127.0.0.1:%u/v1\"}],\"routes\":[{\"model\":\"m\","
             "\"targets\":[{\"provider\":\"p\",\"model\":\"up\"}]}]}",
             air_mock_port(m));
    air_t *r = NULL;
    assert_int_equal(air_new(cfg, &r, err, sizeof err), AIR_OK);
    struct src s;
    src_init(&s, r, -1);
    atomic_store(&s.submits_left, 5);
    assert_int_equal(air_worker_attach(r, 0, s.efd, src_run, &s), AIR_OK);
    uint64_t n = 5;
    assert_int_equal(write(s.efd, &n, sizeof n), (ssize_t)sizeof n);
    for (int i = 0; i < 200 && atomic_load(&s.submits_left) > 0; i++)
        nap_ms(5);
    assert_int_equal(atomic_load(&s.submits_left), 0);
    assert_int_equal(air_worker_detach(r, 0), AIR_OK);
    air_free(r, 50);
    /* No success (the mock takes 2 s), no loss: all 5 done callbacks ran. */
    assert_int_equal(atomic_load(&s.done_ok), 0);
    assert_int_equal(atomic_load(&s.done_all), 5);
    air_mock_stop(m);
    close(s.efd);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loop_source_submits_and_callbacks_stay_on_its_thread),
        cmocka_unit_test(test_loop_source_runs_on_its_timer),
        cmocka_unit_test(test_loop_source_runs_while_the_worker_spins),
        cmocka_unit_test(test_loop_bad_calls_are_refused),
        cmocka_unit_test(test_loop_free_completes_locally_queued_requests),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
