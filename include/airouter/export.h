/*
 * export.h - symbol visibility for libairouter. The library is built with
 * hidden visibility; only declarations marked AIR_API are exported.
 */
#ifndef AIROUTER_EXPORT_H
#define AIROUTER_EXPORT_H

#if defined(AIR_STATIC_DEFINE)
#define AIR_API
#elif defined(__GNUC__) || defined(__clang__)
#define AIR_API __attribute__((visibility("default")))
#else
#define AIR_API
#endif

#endif /* AIROUTER_EXPORT_H */
