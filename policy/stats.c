/*
 * stats.c - per-deployment statistics. DESIGN: workers record into a private
 * air__dobs (plain adds, no atomics, no shared cache line: the cost per
 * completed request is a handful of adds plus two histogram adds), and one
 * aggregator folds the merged observations into an air__dstat every
 * interval. Folding with alpha = 1 - 2^(-dt/halflife) makes the EWMA a
 * function of elapsed time rather than of the number of folds, so changing
 * stats.fold_ms does not change how fast the router reacts. The histograms
 * are decayed by the same factor, so the percentiles describe roughly the
 * same recent past as the EWMAs.
 */
#include "stats.h"

#include <math.h>
#include <string.h>

void
air__dobs_record(struct air__dobs *o, int success, uint64_t lat_us, uint64_t ttft_us,
                 uint64_t out_tokens, uint64_t in_tokens, double cost_usd)
{
    o->requests++;
    o->tokens_in += in_tokens;
    o->tokens_out += out_tokens;
    o->cost_usd += cost_usd;
    if (!success) {
        o->failures++;
        return;
    }
    o->successes++;
    o->lat_n++;
    o->lat_sum_us += lat_us;
    air__hist_add(&o->lat, lat_us, 1.0);
    if (ttft_us > 0) {
        o->ttft_n++;
        o->ttft_sum_us += ttft_us;
        air__hist_add(&o->ttft, ttft_us, 1.0);
        if (out_tokens >= 2 && lat_us > ttft_us) {
            o->tpot_sum_ns += (lat_us - ttft_us) * 1000u / (out_tokens - 1);
            o->tpot_n++;
        }
    }
}

void
air__dobs_cancel(struct air__dobs *o)
{
    o->cancelled++;
}

void
air__dobs_reset(struct air__dobs *o)
{
    memset(o, 0, sizeof *o);
}

void
air__dobs_merge(struct air__dobs *dst, const struct air__dobs *src)
{
    dst->requests += src->requests;
    dst->successes += src->successes;
    dst->failures += src->failures;
    dst->cancelled += src->cancelled;
    dst->lat_sum_us += src->lat_sum_us;
    dst->lat_n += src->lat_n;
    dst->ttft_sum_us += src->ttft_sum_us;
    dst->ttft_n += src->ttft_n;
    dst->tpot_sum_ns += src->tpot_sum_ns;
    dst->tpot_n += src->tpot_n;
    dst->tokens_in += src->tokens_in;
    dst->tokens_out += src->tokens_out;
    dst->cost_usd += src->cost_usd;
    air__hist_merge(&dst->lat, &src->lat);
    air__hist_merge(&dst->ttft, &src->ttft);
}

void
air__dstat_init(struct air__dstat *s)
{
    memset(s, 0, sizeof *s);
    s->succ_ewma = 1.0;
}

/* Move *ewma alpha of the way to mean; the first sample sets it. */
static void
ewma(double *v, int *have, double mean, double alpha)
{
    if (!*have) {
        *v = mean;
        *have = 1;
    } else {
        *v += alpha * (mean - *v);
    }
}

void
air__dstat_fold(struct air__dstat *s, const struct air__dobs *o, double dt_ms, double halflife_ms)
{
    double keep; /* 2^(-dt/halflife): weight of the past */
    if (halflife_ms <= 0)
        keep = 0;
    else if (dt_ms <= 0)
        keep = 1;
    else
        keep = exp2(-dt_ms / halflife_ms);
    double alpha = 1.0 - keep;

    if (o->lat_n > 0)
        ewma(&s->lat_ewma_us, &s->have_samples, (double)o->lat_sum_us / (double)o->lat_n,
             alpha);
    if (o->ttft_n > 0)
        ewma(&s->ttft_ewma_us, &s->have_ttft, (double)o->ttft_sum_us / (double)o->ttft_n, alpha);
    if (o->tpot_n > 0)
        ewma(&s->tpot_ewma_ns, &s->have_tpot, (double)o->tpot_sum_ns / (double)o->tpot_n, alpha);
    if (o->requests > 0) {
        /* succ_ewma starts at 1.0 (presumed healthy), so no first-sample
         * special case: one bad interval does not condemn a deployment. */
        double ratio = (double)o->successes / (double)o->requests;
        s->succ_ewma += alpha * (ratio - s->succ_ewma);
    }

    /* Decay, then merge; percentiles are recomputed only when samples came
     * in (a uniform decay does not move quantiles). */
    static const double qs[3] = {0.50, 0.95, 0.99};
    uint64_t v[3];
    air__hist_decay(&s->lat, keep);
    air__hist_decay(&s->ttft, keep);
    if (o->lat.total > 0) {
        air__hist_merge(&s->lat, &o->lat);
        air__hist_quantiles(&s->lat, qs, 3, v);
        s->lat_p50_us = v[0];
        s->lat_p95_us = v[1];
        s->lat_p99_us = v[2];
    }
    if (o->ttft.total > 0) {
        air__hist_merge(&s->ttft, &o->ttft);
        air__hist_quantiles(&s->ttft, qs, 3, v);
        s->ttft_p50_us = v[0];
        s->ttft_p95_us = v[1];
        s->ttft_p99_us = v[2];
    }

    s->requests += o->requests;
    s->successes += o->successes;
    s->failures += o->failures;
    s->cancelled += o->cancelled;
    s->tokens_in += o->tokens_in;
    s->tokens_out += o->tokens_out;
    s->cost_usd += o->cost_usd;
}
