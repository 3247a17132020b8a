/*
 * ctl.h - the table of global policy tunables (policy/ctl.def) and typed,
 * validated access to them by dotted path.
 *
 * struct air__params holds one value per ctl.def entry. Core keeps the
 * published parameters as an immutable snapshot: a change copies the
 * snapshot, applies the set(s) here (each validated: JSON type, range,
 * mode), runs air__params_validate for the rules between fields, and
 * publishes the copy with one pointer swap. Nothing here is shared or
 * synchronised; every function works on a caller-owned struct.
 *
 * Errors (message in err, naming the path):
 *   AIR_E_NONAME    unknown path
 *   AIR_E_READONLY  the entry is read-only
 *   AIR_E_INVAL     wrong JSON type (a string for a number, 1.5 for an
 *                   integer, 1 for a bool, an unknown strategy name)
 *   AIR_E_RANGE     outside [min, max]
 *
 * The same validation is exposed as helpers (air__ctl_json_*, air__ctl_check_*)
 * so core can check per-route and per-deployment tunables
 * (routes.<model>.strategy, deployments.<p>/<m>.weight, ...) with the same
 * rules and messages.
 */
#ifndef AIR_POLICY_CTL_H
#define AIR_POLICY_CTL_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "airouter.h"
#include "buf.h"
#include "health.h"
#include "pricing.h"
#include "strategy.h"

enum air__ctl_type { AIR_CTL_BOOL, AIR_CTL_I64, AIR_CTL_F64, AIR_CTL_STRATEGY, AIR_CTL_STR };
enum air__ctl_mode { AIR_CTL_RW, AIR_CTL_RO };

/* C type of each ctl.def type. */
#define AIR_CTL_CTYPE_BOOL     int
#define AIR_CTL_CTYPE_I64      int64_t
#define AIR_CTL_CTYPE_F64      double
#define AIR_CTL_CTYPE_STRATEGY enum air__strategy
#define AIR_CTL_CTYPE_STR      const char *

struct air__params {
#define X(path, type, min, max, def, mode, field) AIR_CTL_CTYPE_##type field;
#include "ctl.def"
#undef X
};

/* One row of the table. */
struct air__ctl_entry {
    const char *path;
    enum air__ctl_type type;
    double min, max;     /* I64/F64 */
    double def;          /* numeric default (BOOL 0/1, STRATEGY the enum value) */
    const char *def_str; /* STR default */
    enum air__ctl_mode mode;
    size_t offset; /* of the field in struct air__params */
};

/* Lookup and walk (air_ctl_next). NULL when unknown / past the end. */
const struct air__ctl_entry *air__ctl_find(const char *path);
size_t air__ctl_count(void);
const struct air__ctl_entry *air__ctl_at(size_t i);
const char *air__ctl_type_name(enum air__ctl_type t); /* "bool" "i64" "f64" "str" "str" */
const char *air__ctl_mode_name(enum air__ctl_mode m); /* "rw" "r-" */

void air__params_default(struct air__params *p);

/* Rules between fields, checked before a change is published:
 * eject.max_ms >= eject.base_ms, retry.backoff_cap_ms >= retry.backoff_base_ms,
 * hedge.max_ms >= hedge.min_ms. AIR_OK or AIR_E_RANGE with a message. */
AIR_NODISCARD air_status_t air__params_validate(const struct air__params *p, char *err,
                                                size_t n);

/* Set one entry from a JSON value (validated; p is untouched on error). */
AIR_NODISCARD air_status_t air__ctl_set_json(struct air__params *p, const char *path,
                                             const cJSON *v, char *err, size_t n);
/* Set from text: a JSON value, or for a strategy entry also a bare name
 * ("policy.strategy=score" in air_ctl_apply strings). */
AIR_NODISCARD air_status_t air__ctl_set_text(struct air__params *p, const char *path,
                                             const char *text, char *err, size_t n);
/* Typed setters. f64 on an I64 entry must be integral; i64 on an F64 entry
 * converts; bool only on BOOL, str only on STRATEGY. */
AIR_NODISCARD air_status_t air__ctl_set_f64(struct air__params *p, const char *path, double v,
                                            char *err, size_t n);
AIR_NODISCARD air_status_t air__ctl_set_i64(struct air__params *p, const char *path, int64_t v,
                                            char *err, size_t n);
AIR_NODISCARD air_status_t air__ctl_set_bool(struct air__params *p, const char *path, int v,
                                             char *err, size_t n);
AIR_NODISCARD air_status_t air__ctl_set_str(struct air__params *p, const char *path,
                                            const char *v, char *err, size_t n);

/* The value as JSON text, air__malloc'd (caller frees with air__free); NULL
 * for an unknown path (or out of memory). */
char *air__ctl_get_json(const struct air__params *p, const char *path);
/* Typed getters: AIR_OK, AIR_E_NONAME, or AIR_E_INVAL for a type that does
 * not convert (f64/i64 read BOOL, I64, F64; str reads STRATEGY and STR and
 * returns a static string). */
AIR_NODISCARD air_status_t air__ctl_get_f64(const struct air__params *p, const char *path,
                                            double *out);
AIR_NODISCARD air_status_t air__ctl_get_i64(const struct air__params *p, const char *path,
                                            int64_t *out);
AIR_NODISCARD air_status_t air__ctl_get_str(const struct air__params *p, const char *path,
                                            const char **out);

/* Append one JSON object per entry to out, comma-separated, without the
 * enclosing brackets (a comma is put first when out's last character is
 * neither '[' nor ',' and out is not empty), so core can wrap them and add
 * its own entries:
 *   {"path":"policy.weight.cost","type":"f64","min":0,"max":1,"default":0.3,
 *    "mode":"rw","value":0.3}
 * min/max are null for bool and string types. */
void air__ctl_list_json(const struct air__params *p, air_buf_t *out);

/* Validation helpers for core's own tunables. check: 0 in range, -1 not
 * (NaN is never in range). json_*: type + range check of one JSON value with
 * the same messages as the table ("<path>: ..."). */
int air__ctl_check_f64(double v, double min, double max);
int air__ctl_check_i64(int64_t v, int64_t min, int64_t max);
AIR_NODISCARD air_status_t air__ctl_json_f64(const cJSON *v, const char *path, double min,
                                             double max, double *out, char *err, size_t n);
AIR_NODISCARD air_status_t air__ctl_json_i64(const cJSON *v, const char *path, int64_t min,
                                             int64_t max, int64_t *out, char *err, size_t n);
AIR_NODISCARD air_status_t air__ctl_json_bool(const cJSON *v, const char *path, int *out,
                                              char *err, size_t n);
AIR_NODISCARD air_status_t air__ctl_json_strategy(const cJSON *v, const char *path,
                                                  enum air__strategy *out, char *err, size_t n);

/* The parameters as the structures other policy modules take. */
void air__params_eject_cfg(const struct air__params *p, struct air__eject_cfg *c);
void air__params_weights(const struct air__params *p, struct air__score_weights *w);

#endif
