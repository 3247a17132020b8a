/*
 * The control for the two probes beside it: the same include path as the
 * policy layer, with headers it may use. ctest "layering/policy_allowed"
 * expects this build to succeed, so the probes fail for their include and
 * not for the set-up.
 */
#include "buf.h"
#include "limiter.h"

int air__layer_probe(void);

int
air__layer_probe(void)
{
    air_buf_t b = AIR_BUF_INIT;
    air__buf_puts(&b, "ok");
    int ok = b.len == 2;
    air__buf_free(&b);
    return ok ? 0 : 1;
}
