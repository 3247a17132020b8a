/*
 * hist.h - a log-bucket latency histogram (HdrHistogram's idea, cut down to
 * a fixed 128 buckets).
 *
 * Values are microseconds. 0..7 get a bucket each; above that every power of
 * two is split into 4 equal sub-buckets, so a bucket's width is at most a
 * quarter of its lower bound. The last bucket (127) holds everything from
 * 7 * 2^30 us (about 2 hours) up. Counts are doubles so a histogram can be
 * decayed (multiplied by a factor < 1) to weight recent samples more, which
 * is how policy/stats.c keeps "recent" percentiles without a time window.
 *
 * Thread: none of these functions synchronise; a histogram has one writer.
 */
#ifndef AIR_POLICY_HIST_H
#define AIR_POLICY_HIST_H

#include <stddef.h>
#include <stdint.h>

#define AIR_HIST_BUCKETS 128 /* 4 sub-buckets per power of two, 1 us .. ~2^33 us */

struct air__hist {
    double c[AIR_HIST_BUCKETS]; /* count (weight) per bucket */
    double total;               /* sum of c[] */
};

/* Index of the bucket that holds `us` (0 .. AIR_HIST_BUCKETS-1; larger values
 * land in the last bucket). */
size_t air__hist_bucket(uint64_t us);

/* Inclusive bounds, in us, of bucket i (i < AIR_HIST_BUCKETS). The last
 * bucket's upper bound is UINT64_MAX. */
uint64_t air__hist_bucket_lower(size_t i);
uint64_t air__hist_bucket_upper(size_t i);

/* Add one sample of `us` with the given weight (normally 1). */
void air__hist_add(struct air__hist *h, uint64_t us, double weight);

/* dst += src, bucket by bucket. */
void air__hist_merge(struct air__hist *dst, const struct air__hist *src);

/* Multiply every count (and the total) by factor (0 <= factor <= 1). Counts
 * that fall below 1e-9 are cleared, so an idle histogram does not drift into
 * denormals. */
void air__hist_decay(struct air__hist *h, double factor);

/* Empty the histogram. */
void air__hist_clear(struct air__hist *h);

/* The q-quantile (0 <= q <= 1) in us: the midpoint of the bucket holding the
 * sample of rank ceil(q * total) (q = 0: the lowest non-empty bucket). For
 * any sample in that bucket the relative error is at most 1/8. 0 when the
 * histogram is empty. */
uint64_t air__hist_quantile(const struct air__hist *h, double q);

/* Several quantiles in one pass: qs[] ascending, results into out[]. */
void air__hist_quantiles(const struct air__hist *h, const double *qs, size_t nq, uint64_t *out);

#endif
