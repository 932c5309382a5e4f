/* SPDX-License-Identifier: ISC */
/*
 * app.h -- the modules of one musubid process.  main.c owns it, builds the
 * modules in dependency order and frees them in reverse; every other module
 * borrows it.  cfg is replaced whole on a successful SIGHUP reload, so read
 * it through app->cfg each time rather than keeping a copy.
 */
#ifndef MUSUBI_APP_H
#define MUSUBI_APP_H

#include <event2/event.h>

struct acquire;
struct api;
struct campaign;
struct chancache;
struct config;
struct curlev;
struct db;
struct ec;
struct httpd;
struct identity;
struct line_intake;
struct metrics;
struct track;

struct app {
	struct event_base	*base;
	struct config		*cfg;
	struct metrics		*metrics;
	struct db		*db;
	struct curlev		*curl;
	struct httpd		*httpd;
	struct chancache	*channels;
	struct api		*api;
	struct line_intake	*line;
	struct ec		*ec;
	struct track		*track;
	struct campaign		*campaign;
	struct identity		*identity;
	struct acquire		*acquire;
	int			 stopping;
};

#endif
