/* SPDX-License-Identifier: ISC */
/*
 * xmalloc.h -- allocation wrappers that exit on out-of-memory, as tmux does.
 * Every result belongs to the caller.
 */
#ifndef MUSUBI_XMALLOC_H
#define MUSUBI_XMALLOC_H

#include <stdarg.h>
#include <stddef.h>

#include "musubi/compat.h"

void	*xmalloc(size_t);
void	*xcalloc(size_t, size_t);
void	*xreallocarray(void *, size_t, size_t);
char	*xstrdup(const char *);
char	*xstrndup(const char *, size_t);
int	 xasprintf(char **, const char *, ...) PRINTFLIKE(2, 3);
int	 xvasprintf(char **, const char *, va_list) PRINTFLIKE(2, 0);
/* Free *p if set and store a new formatted string there. */
void	 xsetcause(char **, const char *, ...) PRINTFLIKE(2, 3);

#endif
