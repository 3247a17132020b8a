/*
 * jscan.h - strict JSON scanning without a tree (see jscan.c).
 */
#ifndef AIR_PROVIDERS_JSCAN_H
#define AIR_PROVIDERS_JSCAN_H

/* String escapes seen by air__jscan_str. */
#define AIR_JSCAN_ESC_ANY 1 /* some backslash escape */
#define AIR_JSCAN_ESC_ODD 2 /* \u or \/: cJSON decodes them to bytes written differently */

/* p at '"': a strictly valid string (RFC 8259, no raw control bytes, no lone
 * surrogate). Returns the byte after the closing quote, or NULL; *esc gets
 * AIR_JSCAN_ESC_* flags. */
const char *air__jscan_str(const char *p, const char *e, unsigned *esc);
/* A strictly valid number at p: the byte after it, or NULL. */
const char *air__jscan_num(const char *p, const char *e);
/* Any value at p (depth bounds nesting): the byte after it, or NULL. */
const char *air__jscan_skip_value(const char *p, const char *e, int depth);

#endif
