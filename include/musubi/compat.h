/* SPDX-License-Identifier: ISC */
/*
 * compat.h -- compiler attributes and small portable helpers shared by
 * every module.
 */
#ifndef MUSUBI_COMPAT_H
#define MUSUBI_COMPAT_H

#include <stddef.h>
#include <stdint.h>

#define PRINTFLIKE(a, b) __attribute__((format(printf, (a), (b))))
#define MUSTCHECK __attribute__((warn_unused_result))
#define NORETURN __attribute__((noreturn))
#define UNUSED __attribute__((unused))

#define nitems(a) (sizeof(a) / sizeof((a)[0]))

#endif
