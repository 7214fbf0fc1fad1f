/*
 * odcp - copy files to and from OneDrive from a shell, a cron job or a
 * router.  One C99/POSIX file; TLS 1.2 comes from BearSSL, everything else
 * (HTTP/1.1, a streaming JSON tokenizer, OAuth 2.0, Microsoft Graph) is here.
 *
 * SPDX-License-Identifier: ISC
 * Build: make (or make static for a musl binary).  Manual: man/odcp.1.
 *
 * The file reads top to bottom in the order data flows; `make toc` lists:
 *   1  Limits and constants       8  JSON pull tokenizer
 *   2  Shared types               9  Profiles and configuration
 *   3  Diagnostics               10  OAuth 2.0 and the token store
 *   4  Small utilities           11  Microsoft Graph (policy)
 *   5  Network                   12  Commands
 *   6  TLS and transport         13  Command line and main
 *   7  HTTP/1.1
 * Each section calls only itself and the sections above it.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <bearssl.h>

/* == 1. Limits and constants ============================================== */

#ifndef ODCP_VERSION
#define ODCP_VERSION "0.1"
#endif
/* A distributor who registers an app may bake its id in: -DODCP_CLIENT_ID=... */
#ifndef ODCP_CLIENT_ID
#define ODCP_CLIENT_ID ""
#endif

#define HOST_MAX	256	/* DNS names are at most 253 bytes */
#define URL_MAX		8192	/* upload/download URLs run past 2 KB; nextLink too */
#define HTTP_LINE_MAX	8192	/* a status, header or chunk-size line */
#define HTTP_REDIRECT_MAX 5	/* only /content redirects, once */
#define CONN_RBUF	16384	/* read-ahead under the line reader */
#define CONN_POOL	3	/* Graph, login, and one pre-authenticated host */
#define IO_BUF		65536	/* file <-> network copy buffer */
#define JSON_DEPTH_MAX	64	/* Graph documents nest about 6 deep */
#define JSON_BODY_MAX	(16 << 20)	/* a JSON answer (a listing page: far less) */
#define JSON_STR_MAX	16384	/* tokens and pre-authenticated URLs fit */
#define JSON_RBUF	4096
#define TOKEN_MAX	JSON_STR_MAX	/* access and refresh tokens */
#define PATH_MAX_	2048	/* a drive path: 400 UTF-16 units, <= 1600 bytes */
#define LPATH_MAX	4096	/* a local path */
#define NAME_MAX_	1024	/* one item name, UTF-8 (255 UTF-16 units) */
#define ID_MAX		256	/* item and drive ids */
#define FIELD_MAX	256	/* short values: times, tags, hashes, codes */
#define MSG_MAX		1024	/* an error message from the service */
#define CONF_LINE_MAX	4096
#define PROFILE_MAX	64
#define TREE_DEPTH_MAX	64	/* recursion into local and remote folders */
#define RETRY_DEFAULT	6	/* --retries: attempts after the first */
#define RETRY_LIMIT	100
#define LIST_SEEN	1024	/* listing pages remembered to catch a loop */
#define LIST_EMPTY_MAX	16	/* empty listing pages in a row */
#define BACKOFF_MAX	32	/* backoff: 1, 2, 4 .. 32 s, plus up to as much jitter */
#define RETRY_AFTER_MAX	900	/* a longer Retry-After gives up instead */
#define FRESH_RETRIES	4	/* 404 on an item odcp has just written */
#define FRESH_RECENT	16	/* folders remembered as just created */
#define SESSION_RESTARTS 3	/* new upload sessions after one vanished */
#define RANGES_MAX	32	/* nextExpectedRanges read from one answer */
#define PART_NAME_MAX	255	/* a partial file's name, as most file
				 * systems' NAME_MAX */
#define EXPIRY_SLACK	60	/* s: a session's expiry is saved again when
				 * the service has pushed it on this much */
#define TIMEOUT_DEFAULT	60	/* seconds: connect and each read or write */
#define COMMIT_SLOW	5	/* the last fragment's answer may take this many
				 * timeouts: the service assembles the file
				 * (graph-api.md 7.4) */

/* Graph rules for uploads (graph-api.md 6, 7.2). */
#define SIMPLE_UPLOAD_MAX (4 * 1024 * 1024)	/* single PUT up to 4 MiB */
#define FRAGMENT_UNIT	327680			/* fragments: multiples of 320 KiB */
#define FRAGMENT_LIMIT	62914560		/* each request under 60 MiB */
#define FRAGMENT_DEFAULT (32 * FRAGMENT_UNIT)	/* 10 MiB */

#define LOGIN_URL	"https://login.microsoftonline.com"
#define GRAPH_URL	"https://graph.microsoft.com/v1.0"
#define SCOPE_DEFAULT	"Files.ReadWrite offline_access"
#define TENANT_DEFAULT	"common"
#define USER_AGENT	"NONISV|odcp|odcp/" ODCP_VERSION

/* Exit statuses, also in odcp.1 EXIT STATUS. */
enum {
	EXIT_OK = 0,
	EXIT_FAIL = 1,		/* anything else went wrong */
	EXIT_USAGE = 2,		/* bad command line or configuration */
	EXIT_AUTH = 3,		/* sign-in needed: no token, or it was refused */
	EXIT_NOTFOUND = 4,	/* the remote item (or local source) is missing */
	EXIT_EXISTS = 5,	/* the target already exists */
	EXIT_PARTIAL = 6	/* some items of a multi-item job failed */
};

/* The driveItem fields odcp reads ($select of listings). */
#define ITEM_FIELDS "id,name,size,eTag,cTag,createdDateTime," \
	"lastModifiedDateTime,fileSystemInfo,file,folder,package,root"

/* == 2. Shared types ====================================================== */

/*
 * One connection to one host: the socket, the BearSSL engine with its
 * caller-owned I/O buffer, and a read-ahead buffer for line reads.  The
 * read and write functions are the transport seam: TLS in odcp, memory in
 * the unit tests.  err is sticky: after the first failure every call fails.
 */
struct conn {
	int	 fd;
	int	 err;
	int	 timeout;		/* seconds per read/write */
	char	 host[HOST_MAX];
	char	 port[8];
	long	 (*rd)(struct conn *, unsigned char *, size_t);
	long	 (*wr)(struct conn *, const unsigned char *, size_t);
	void	*arg;			/* the test seam's state */
	unsigned char rbuf[CONN_RBUF];
	size_t	 roff, rlen;
	br_ssl_client_context sc;
	br_x509_minimal_context xc;
	br_sslio_context ioc;
	unsigned char iobuf[BR_SSL_BUFSIZE_BIDI];
};

/* A response head and the state of its body framing. */
struct http_resp {
	int	 status;
	int	 close;			/* the connection ends with this response */
	int	 chunked;
	int64_t	 clen;			/* Content-Length, or -1 */
	int64_t	 left;			/* body (or chunk) bytes still to read */
	int	 cstate;		/* chunked decoder state, see §7 */
	int	 done;			/* the whole body has been read */
	char	 location[URL_MAX];
	char	 retry_after[FIELD_MAX];
	char	 content_range[FIELD_MAX];
	char	 content_type[FIELD_MAX];
	char	 date[FIELD_MAX];
};

/* A request: a memory body, or a file region for upload fragments. */
struct http_req {
	const char *method;
	const char *target;		/* origin-form: path and query */
	const char *hdrs;		/* extra header lines, CRLF-ended, or NULL */
	const void *body;
	size_t	 blen;
	int	 fd;			/* >= 0: send flen bytes from off */
	off_t	 off;
	int64_t	 flen;
	int	 has_body;		/* send Content-Length, even 0 */
	int	 once;			/* not idempotent: never resent blindly */
	int	 resent;		/* out: sent again on a new connection */
	/* sees each file region as it is sent: (tapctx, offset, bytes) */
	void	 (*tap)(void *, int64_t, const unsigned char *, size_t);
	void	*tapctx;
};

/* JSON events (§8); json_event_names[] prints them in tests. */
enum json_ev {
	JSON_ERR, JSON_END, JSON_OBJ, JSON_OBJ_END, JSON_ARR, JSON_ARR_END,
	JSON_KEY, JSON_STR, JSON_NUM, JSON_TRUE, JSON_FALSE, JSON_NULL,
	JSON_EV_MAX
};

typedef long (*json_read_fn)(void *, unsigned char *, size_t);

struct json {
	json_read_fn rd;
	void	*rctx;
	unsigned char buf[JSON_RBUF];
	size_t	 off, len;
	int	 eof;
	int64_t	 pos;			/* bytes consumed, for messages */
	char	 str[JSON_STR_MAX + 1];	/* KEY, STR, NUM text, NUL-ended */
	size_t	 slen;
	char	 stack[JSON_DEPTH_MAX];	/* '{' or '[' per open level */
	int	 depth;
	int	 want;			/* what the grammar expects next */
	int	 skip;			/* scanning only: strings not stored */
	int	 err;
	int	 rderr;		/* the error was the source's: already reported */
	char	 msg[128];
};

/* One driveItem, as much of it as odcp uses. */
enum item_type { ITEM_NONE, ITEM_FILE, ITEM_FOLDER, ITEM_PACKAGE };

struct item {
	int	 type;
	int	 root;			/* the drive root (has the root facet) */
	int64_t	 size;
	int64_t	 children;		/* folder.childCount, or -1 */
	char	 id[ID_MAX];
	char	 name[NAME_MAX_];
	char	 etag[FIELD_MAX];
	char	 ctag[FIELD_MAX];
	char	 created[FIELD_MAX];
	char	 modified[FIELD_MAX];	/* fileSystemInfo if given, else item */
	char	 qxh[FIELD_MAX];	/* file.hashes.quickXorHash */
	char	 mime[FIELD_MAX];
};

/* A profile: where to sign in, which drive, and how to reach them. */
struct profile {
	char	 name[PROFILE_MAX];
	char	 dir[LPATH_MAX];	/* configuration and token directory */
	char	 client_id[FIELD_MAX];
	char	 tenant[FIELD_MAX];
	char	 scope[FIELD_MAX];
	char	 login_url[URL_MAX];
	char	 graph_url[URL_MAX];
	char	 redirect_uri[URL_MAX];
	char	 cacert[LPATH_MAX];
	char	 drive[ID_MAX];
	char	 user[FIELD_MAX];
	char	 secret_file[LPATH_MAX];
	char	 secret[TOKEN_MAX];	/* client secret (app-only), wiped */
	char	 proxy[URL_MAX];	/* may hold a password: wiped */
	int	 timeout;
	int	 retries;
	int64_t	 fragment;
};

/* Tokens of the current profile; wiped before exit. */
struct token {
	char	 access[TOKEN_MAX];
	char	 refresh[TOKEN_MAX];
	int64_t	 expires;		/* unix seconds */
	int64_t	 obtained;		/* when the access token was issued */
};

/* == 3. Diagnostics ======================================================= */

/*
 * Every failure is reported once, where it happens, as one line on stderr
 * beginning "odcp: ".  fail() records the exit status for main and
 * returns -1 so a failing branch is a single return statement.  A format
 * ending in ':' gets strerror(errno) appended.  debug() prints at -v.
 */
static int verbose;
static int quiet;
static int exit_status;
static int hush;		/* hold reports: a retry may follow */
static int silent;		/* suppress reports: best-effort clean-up */
static char held[MSG_MAX + 600];	/* the last report held back by hush */
static int held_status;
static const char *report_tail = "";	/* printed after each report */

#if defined(__GNUC__) || defined(__clang__)
#define PRINTFLIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define PRINTFLIKE(f, a)
#endif
/* the compiler checks every format against its arguments */
static int fail(int, const char *, ...) PRINTFLIKE(2, 3);
static int err1(const char *, ...) PRINTFLIKE(1, 2);
static void warn1(const char *, ...) PRINTFLIKE(1, 2);
static void debug(int, const char *, ...) PRINTFLIKE(2, 3);
static void bfmt(char *, size_t, const char *, ...) PRINTFLIKE(3, 4);

/* Format a report into out: a format ending in ':' gets strerror(errno). */
static void
report_fmt(char *out, size_t sz, const char *fmt, va_list ap)
{
	char	 msg[MSG_MAX + 512];
	size_t	 n;
	int	 e = errno;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	if (n > 0 && msg[n - 1] == ':')
		snprintf(out, sz, "%s %s", msg, strerror(e));
	else
		snprintf(out, sz, "%s", msg);
}

static int
vfail(int status, const char *fmt, va_list ap)
{
	if (silent)
		return -1;
	report_fmt(held, sizeof(held), fmt, ap);
	held_status = status;
	if (hush)
		return -1;
	fprintf(stderr, "odcp: %s%s\n", held, report_tail);
	held[0] = '\0';
	if (exit_status == EXIT_OK || exit_status == EXIT_FAIL)
		exit_status = status;
	return -1;
}

/* Report what hush held back: the retries are over. */
static int
release(void)
{
	if (held[0] == '\0')
		return -1;
	fprintf(stderr, "odcp: %s%s\n", held, report_tail);
	held[0] = '\0';
	if (exit_status == EXIT_OK || exit_status == EXIT_FAIL)
		exit_status = held_status;
	return -1;
}

/* release(), as "what: <what was held> (N attempts)". */
static int
release_after(const char *what, int attempts)
{
	char	 why[sizeof(held)];

	if (held[0] == '\0')
		return -1;
	bfmt(why, sizeof(why), "%s", held);
	bfmt(held, sizeof(held), "%s: %s (%d attempt%s)", what, why, attempts,
	    attempts > 1 ? "s" : "");
	return release();
}

static int
fail(int status, const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	vfail(status, fmt, ap);
	va_end(ap);
	return -1;
}

/* What costs only a convenience (a resume): said, the status unchanged. */
static void
warn1(const char *fmt, ...)
{
	char	 msg[sizeof(held)];
	va_list	 ap;

	if (silent)
		return;
	va_start(ap, fmt);
	report_fmt(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "odcp: %s\n", msg);
}

/* The common case: a runtime failure, exit status 1. */
static int
err1(const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	vfail(EXIT_FAIL, fmt, ap);
	va_end(ap);
	return -1;
}

static void
debug(int level, const char *fmt, ...)
{
	va_list	 ap;

	if (verbose < level)
		return;
	va_start(ap, fmt);
	fputs("odcp: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* Our own formatting overflowed a fixed buffer: a bug, not bad input. */
#define BUG(what) bug(__FILE__, __LINE__, what)
static void
bug(const char *file, int line, const char *what)
{
	fprintf(stderr, "odcp: internal error at %s:%d: %s\n", file, line, what);
	exit(EXIT_FAIL);
}

/*
 * A URL for a log line.  Pre-authenticated download and upload URLs carry
 * a bearer-equivalent secret in their path or query, so for any host but
 * Graph's and the login host only the scheme and host are shown.  A
 * user:password before the host is never shown.
 */
static void
log_url(char *out, size_t sz, const char *url, int trusted)
{
	const char *s, *p, *at;

	s = strstr(url, "://");
	s = s ? s + 3 : url;
	p = s + strcspn(s, "/?#");
	for (at = p; at > s && at[-1] != '@'; at--)
		;
	if (at > s)			/* user info: dropped */
		snprintf(out, sz, "%.*s<redacted>@%.*s%s", (int)(s - url), url,
		    (int)(p - at), at, trusted ? p : "/<redacted>");
	else if (trusted)
		snprintf(out, sz, "%s", url);
	else
		snprintf(out, sz, "%.*s/<redacted>", (int)(p - url), url);
}

/* == 4. Small utilities =================================================== */

/* Wipe a secret so it is not left in memory. */
static void
wipe(void *p, size_t n)
{
	volatile unsigned char *v = p;

	while (n--)
		*v++ = 0;
}

/* FNV-1a, 64 bits: a cheap fingerprint of a string. */
static uint64_t
fnv1a(const char *s)
{
	uint64_t h = UINT64_C(14695981039346656037);

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * UINT64_C(1099511628211);
	return h;
}

/* Bounded formatting into our own buffers; overflow is a bug. */
static void
bfmt(char *buf, size_t sz, const char *fmt, ...)
{
	va_list	 ap;
	int	 n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sz, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sz)
		BUG("formatted string does not fit");
}

/* Append to a NUL-terminated buffer; returns -1 if it would not fit. */
static int
bcat(char *buf, size_t sz, const char *s, size_t n)
{
	size_t	 len = strlen(buf);

	if (n >= sz - len)
		return -1;
	memcpy(buf + len, s, n);
	buf[len + n] = '\0';
	return 0;
}

/* Copy a string that must fit (values we checked or produced). */
static int
scopy(char *dst, size_t sz, const char *src)
{
	size_t	 n = strlen(src);

	if (n >= sz)
		return -1;
	memcpy(dst, src, n + 1);
	return 0;
}

/* Does s hold a control character (which no Graph value has)? */
static int
has_control(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return 1;
	return 0;
}

/* Text from the network, made safe to print: control characters (a
 * terminal escape, a forged second line) become '?'. */
static void
tidy(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = '?';
}

/* Copy for display, cutting what does not fit (messages only). */
static void
strtrunc(char *dst, size_t sz, const char *src)
{
	size_t	 n = strlen(src);

	if (n >= sz)
		n = sz - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

/*
 * Parse a decimal integer in [min, max] from all of s.  Returns 0, or -1
 * for anything else (empty, signs where not allowed, junk, overflow).
 */
static int
parse_int(const char *s, int64_t min, int64_t max, int64_t *out)
{
	int64_t	 v = 0;
	int	 neg = 0;

	if (*s == '-') {
		neg = 1;
		s++;
	}
	if (!isdigit((unsigned char)*s))
		return -1;
	for (; isdigit((unsigned char)*s); s++) {
		if (v > (INT64_MAX - (*s - '0')) / 10)
			return -1;
		v = v * 10 + (*s - '0');
	}
	if (*s != '\0')
		return -1;
	if (neg)
		v = -v;
	if (v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

/*
 * Percent-encode s: every byte for which plain() is false becomes %HH.
 * Returns -1 if the result does not fit in sz bytes.
 */
static int
pct_encode(char *out, size_t sz, const char *s, int (*plain)(int))
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *p;
	size_t	 n = 0;

	for (p = (const unsigned char *)s; *p; p++) {
		if (plain(*p)) {
			if (n + 1 >= sz)
				return -1;
			out[n++] = (char)*p;
		} else {
			if (n + 3 >= sz)
				return -1;
			out[n++] = '%';
			out[n++] = hex[*p >> 4];
			out[n++] = hex[*p & 15];
		}
	}
	out[n] = '\0';
	return 0;
}

/* RFC 3986 unreserved: A-Z a-z 0-9 - . _ ~ */
static int
unreserved(int c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	    (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
	    c == '~';
}

static int
path_plain(int c)
{
	return unreserved(c) || c == '/';
}

/*
 * A drive path keeps its '/' separators and nothing else (graph-api.md
 * 3.3: '+' must not reach the service raw, '#' and '?' would end the
 * path, ':' would close it).
 */
static int
path_encode(char *out, size_t sz, const char *path)
{
	return pct_encode(out, sz, path, path_plain);
}

/* One value of an application/x-www-form-urlencoded body. */
static int
form_encode(char *out, size_t sz, const char *s)
{
	return pct_encode(out, sz, s, unreserved);
}

static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decode %HH in place, and '+' as a space if plus (form values). */
static int
pct_decode(char *s, int plus)
{
	char	*o = s;
	int	 h, l;

	for (; *s; s++) {
		if (*s == '+' && plus)
			*o++ = ' ';
		else if (*s == '%') {
			if ((h = hexval(s[1])) < 0 || (l = hexval(s[2])) < 0)
				return -1;
			*o++ = (char)(h << 4 | l);
			s += 2;
		} else
			*o++ = *s;
	}
	*o = '\0';
	return 0;
}

/*
 * Escape a string for a JSON request body (RFC 8259 7): quote, backslash
 * and control characters.  UTF-8 passes through.
 */
static int
json_escape(char *out, size_t sz, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p;
	size_t	 n = 0;

	for (p = (const unsigned char *)s; *p; p++) {
		if (n + 7 >= sz)
			return -1;
		if (*p == '"' || *p == '\\') {
			out[n++] = '\\';
			out[n++] = (char)*p;
		} else if (*p < 0x20) {
			memcpy(out + n, "\\u00", 4);
			n += 4;
			out[n++] = hex[*p >> 4];
			out[n++] = hex[*p & 15];
		} else
			out[n++] = (char)*p;
	}
	out[n] = '\0';
	return 0;
}

/* Base64 (RFC 4648 4, padded) or base64url (5, unpadded). */
static void
base64(char *out, const unsigned char *in, size_t n, int url)
{
	const char *a = url ?
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" :
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t	 i;
	uint32_t v;

	for (i = 0; i + 2 < n; i += 3) {
		v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		*out++ = a[v >> 18 & 63];
		*out++ = a[v >> 12 & 63];
		*out++ = a[v >> 6 & 63];
		*out++ = a[v & 63];
	}
	if (i < n) {
		v = (uint32_t)in[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)in[i + 1] << 8;
		*out++ = a[v >> 18 & 63];
		*out++ = a[v >> 12 & 63];
		if (i + 1 < n)
			*out++ = a[v >> 6 & 63];
		else if (!url)
			*out++ = '=';
		if (!url)
			*out++ = '=';
	}
	*out = '\0';
}

/* Random bytes from the kernel; a failure here is fatal to the caller. */
static int
random_bytes(unsigned char *buf, size_t n)
{
	int	 fd;
	ssize_t	 r;
	size_t	 got = 0;

	if ((fd = open("/dev/urandom", O_RDONLY)) == -1)
		return err1("/dev/urandom:");
	while (got < n) {
		r = read(fd, buf + got, n - got);
		if (r <= 0) {
			close(fd);
			return err1("/dev/urandom: short read");
		}
		got += (size_t)r;
	}
	close(fd);
	return 0;
}

/*
 * quickXorHash (graph-api.md 10.1): each byte is XORed into a 160-bit
 * accumulator at a bit offset that advances by 11 per byte, wrapping
 * around; the length is XORed, little-endian, into the last 8 bytes.
 */
struct qxh {
	unsigned char acc[20];
	unsigned int shift;		/* bit offset of the next byte */
	uint64_t len;
};

static void
qxh_init(struct qxh *q)
{
	memset(q, 0, sizeof(*q));
}

static void
qxh_update(struct qxh *q, const unsigned char *p, size_t n)
{
	unsigned int s = q->shift, byte, bit;
	size_t	 i;

	for (i = 0; i < n; i++) {
		byte = s / 8;
		bit = s % 8;
		q->acc[byte] ^= (unsigned char)(p[i] << bit);
		if (bit != 0)
			q->acc[(byte + 1) % 20] ^= (unsigned char)(p[i] >> (8 - bit));
		s += 11;
		if (s >= 160)
			s -= 160;
	}
	q->shift = s;
	q->len += n;
}

/* The 28-character base64 form the service reports. */
static void
qxh_final(struct qxh *q, char out[29])
{
	unsigned char d[20];
	int	 i;

	memcpy(d, q->acc, 20);
	for (i = 0; i < 8; i++)
		d[12 + i] ^= (unsigned char)(q->len >> (8 * i));
	base64(out, d, 20, 0);
}

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static int64_t
days_from_civil(int64_t y, int m, int d)
{
	int64_t	 era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/* Parse "YYYY-MM-DDTHH:MM:SS[.fff]Z" (RFC 3339, UTC) to unix seconds. */
static int
time_parse(const char *s, int64_t *out)
{
	static const char shape[] = "dddd-dd-ddTdd:dd:dd";
	int	 y, mo, d, h, mi, se, i;

	for (i = 0; shape[i]; i++)
		if (shape[i] == 'd' ? !isdigit((unsigned char)s[i]) :
		    s[i] != shape[i])
			return -1;
	/* optional fractional seconds, then Z: the service sends UTC */
	i = 19;
	if (s[i] == '.') {
		for (i++; isdigit((unsigned char)s[i]); i++)
			;
		if (i == 20)
			return -1;
	}
	if (s[i] != 'Z' || s[i + 1] != '\0')
		return -1;
	sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d", &y, &mo, &d, &h, &mi, &se);
	if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 ||
	    se > 60)
		return -1;
	*out = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se;
	return 0;
}

/* Format unix seconds as "YYYY-MM-DDTHH:MM:SSZ". */
static void
time_format(char *out, size_t sz, int64_t t)
{
	struct tm tm;
	time_t	 tt = (time_t)t;

	if (gmtime_r(&tt, &tm) == NULL || strftime(out, sz,
	    "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		bfmt(out, sz, "1970-01-01T00:00:00Z");
}

/*
 * Parse an HTTP-date in the three forms a recipient must take (RFC 9110
 * 5.6.7): IMF-fixdate "Sun, 06 Nov 1994 08:49:37 GMT", the obsolete RFC
 * 850 "Sunday, 06-Nov-94 08:49:37 GMT" (a two-digit year 70-99 is 19yy,
 * else 20yy) and asctime "Sun Nov  6 08:49:37 1994".
 */
static int
http_date(const char *s, int64_t *out)
{
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	const char *m;
	char	 mon[4];
	int	 d, y, h, mi, se, n = 0;

	if (sscanf(s, "%*3[A-Za-z], %2d %3[A-Za-z] %4d %2d:%2d:%2d GMT%n", &d,
	    mon, &y, &h, &mi, &se, &n) == 6 && n > 0 && s[n] == '\0')
		;
	else if (n = 0, sscanf(s, "%*9[A-Za-z], %2d-%3[A-Za-z]-%2d "
	    "%2d:%2d:%2d GMT%n", &d, mon, &y, &h, &mi, &se, &n) == 6 &&
	    n > 0 && s[n] == '\0')
		y += y < 70 ? 2000 : 1900;
	else if (n = 0, sscanf(s, "%*3[A-Za-z] %3[A-Za-z] %2d %2d:%2d:%2d "
	    "%4d%n", mon, &d, &h, &mi, &se, &y, &n) == 6 && n > 0 &&
	    s[n] == '\0')
		;
	else
		return -1;
	if ((m = strstr(months, mon)) == NULL || (m - months) % 3 != 0 ||
	    d < 1 || d > 31 || h > 23 || mi > 59 || se > 60 || h < 0 ||
	    mi < 0 || se < 0)
		return -1;
	*out = days_from_civil(y, (int)(m - months) / 3 + 1, d) * 86400 +
	    h * 3600 + mi * 60 + se;
	return 0;
}

/* Write all of buf to fd, retrying short writes and EINTR. */
static int
write_all(int fd, const void *buf, size_t n)
{
	const char *p = buf;
	ssize_t	 w;

	while (n > 0) {
		w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/*
 * fopen(path, "r") of a regular file only: a FIFO or a device put in its
 * place must not hang odcp, so it is opened without blocking and
 * refused with errno EINVAL ("not a regular file", callers say).
 */
static FILE *
fopen_regular(const char *path)
{
	struct stat st;
	FILE	*f;
	int	 fd;

	if ((fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY)) == -1)
		return NULL;
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		close(fd);
		errno = EINVAL;
		return NULL;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	if ((f = fdopen(fd, "r")) == NULL)
		close(fd);
	return f;
}

/* Read up to n bytes at off, retrying EINTR; returns bytes or -1. */
static ssize_t
pread_full(int fd, void *buf, size_t n, off_t off)
{
	char	*p = buf;
	size_t	 got = 0;
	ssize_t	 r;

	while (got < n) {
		r = pread(fd, p + got, n - got, off + (off_t)got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

/* mkdir -p for a local directory; new directories are mode 0700. */
static int
mkdir_parents(const char *dir)
{
	char	 buf[LPATH_MAX], *p;

	if (scopy(buf, sizeof(buf), dir) == -1) {
		errno = ENAMETOOLONG;
		return -1;
	}
	for (p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0700) == -1 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	return mkdir(buf, 0700) == -1 && errno != EEXIST ? -1 : 0;
}

/* The last component of a path ("" for "/"). */
static const char *
base_name(const char *path)
{
	const char *s = strrchr(path, '/');

	return s ? s + 1 : path;
}

/* The folder a local path is in: "." for a bare name, "/" for "/x". */
static void
dir_name(const char *path, char *out, size_t sz)
{
	const char *s = strrchr(path, '/');

	bfmt(out, sz, "%.*s", s == NULL || s == path ? 1 : (int)(s - path),
	    s == NULL ? "." : path);
}

/* == 5. Network =========================================================== */

/*
 * net_connect: resolve host and connect to the first address that answers
 * within timeout seconds.  Returns the socket, or -1 after reporting the
 * last address's error.  net_wait() waits timeout seconds for fd to be
 * ready, and less when a deadline is set: what must come whole within
 * the timeout (a proxy's tunnel, a TLS handshake, a response head) is
 * then not kept going by a peer that sends a byte at a time.
 */
static int64_t net_deadline;	/* ms on the monotonic clock; 0: none */

static int64_t
net_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A deadline timeout seconds from now, or none (0). */
static void
net_deadline_set(int timeout)
{
	net_deadline = timeout > 0 ? net_now_ms() + (int64_t)timeout * 1000 : 0;
}

static int
net_wait(int fd, int events, int timeout)
{
	struct pollfd pfd;
	int64_t	 ms = (int64_t)timeout * 1000;
	int	 r;

	if (net_deadline > 0 && net_deadline - net_now_ms() < ms)
		ms = net_deadline - net_now_ms();
	if (ms <= 0) {
		errno = ETIMEDOUT;
		return -1;
	}
	pfd.fd = fd;
	pfd.events = (short)events;
	do
		r = poll(&pfd, 1, (int)ms);
	while (r < 0 && errno == EINTR);
	if (r == 0)
		errno = ETIMEDOUT;
	return r > 0 ? 0 : -1;
}

/* The last connection failure cannot be cured by trying again: an
 * unknown host name, or a TLS handshake the server or we refused. */
static int net_permanent;
static const char *net_role = "";	/* "proxy " while reaching one */

static int
net_connect(const char *host, const char *port, int timeout)
{
	struct addrinfo hints, *res, *ai;
	socklen_t len;
	int	 fd = -1, rc, e = 0, fl;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	if ((rc = getaddrinfo(host, port, &hints, &res)) != 0) {
		net_permanent = rc == EAI_NONAME;
		return err1("%s%s: %s", net_role, host, gai_strerror(rc));
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		if ((fd = socket(ai->ai_family, ai->ai_socktype,
		    ai->ai_protocol)) == -1) {
			e = errno;
			continue;
		}
		fl = fcntl(fd, F_GETFL);
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 ||
		    (errno == EINPROGRESS && net_wait(fd, POLLOUT, timeout) == 0)) {
			len = sizeof(e);
			e = 0;
			getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len);
			if (e == 0) {
				fcntl(fd, F_SETFL, fl);
				break;
			}
		} else
			e = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd == -1) {
		errno = e;
		return err1("connect to %s%s port %s:", net_role, host, port);
	}
	return fd;
}

/*
 * An HTTP proxy for https (--proxy, https_proxy, HTTPS_PROXY, or the
 * profile's proxy), unless no_proxy or NO_PROXY names the host.  odcp asks
 * the proxy for a tunnel with CONNECT (RFC 9110 9.3.6) and runs TLS
 * through it to the real host, so SNI and the certificate checks are
 * unchanged.  user:password in the proxy URL become Basic credentials,
 * which are never logged.
 */
struct proxy {
	char	 host[HOST_MAX];
	char	 port[8];
	char	 auth[512];		/* base64 of user:password, or "" */
};
static struct proxy proxy;
static const char *no_proxy;

/*
 * Set the proxy from a URL: http://[user[:password]@]host[:port][/];
 * from names where it came from (--proxy, https_proxy ...) in errors.
 */
static int
proxy_set(const char *url, const char *from)
{
	char	 cred[256], *colon;	/* base64: 344 bytes, in auth */
	const char *h = url, *at, *e;
	size_t	 n;

	memset(&proxy, 0, sizeof(proxy));
	if (url == NULL || *url == '\0')
		return 0;
	if (strncasecmp(h, "http://", 7) == 0)
		h += 7;
	else if (strstr(h, "://") != NULL)
		return fail(EXIT_USAGE, "%s: only http:// proxies are "
		    "supported (not TLS to the proxy, nor SOCKS)", from);
	e = h + strcspn(h, "/");
	for (at = e; at > h && at[-1] != '@'; at--)	/* the last '@' */
		;
	if (at-- > h) {
		if ((size_t)(at - h) >= sizeof(cred))
			return fail(EXIT_USAGE, "%s: user name too long", from);
		memcpy(cred, h, (size_t)(at - h));
		cred[at - h] = '\0';
		if (pct_decode(cred, 0) == -1 || strchr(cred, '\n') != NULL)
			return fail(EXIT_USAGE, "%s: bad %%-escape in the "
			    "user name or password", from);
		if (strchr(cred, ':') == NULL && bcat(cred, sizeof(cred), ":",
		    1) == -1)
			return fail(EXIT_USAGE, "%s: user name too long", from);
		base64(proxy.auth, (unsigned char *)cred, strlen(cred), 0);
		wipe(cred, sizeof(cred));
		h = at + 1;
	}
	colon = memchr(h, ':', (size_t)(e - h));
	n = (size_t)((colon ? colon : e) - h);
	if (n == 0 || n >= sizeof(proxy.host) || (*e != '\0' && e[1] != '\0') ||
	    strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "0123456789-.") != n)
		return fail(EXIT_USAGE, "%s: expected http://host:port",
		    from);
	memcpy(proxy.host, h, n);
	if (colon == NULL)
		strcpy(proxy.port, "80");
	else if ((n = (size_t)(e - colon - 1)) == 0 || n >= sizeof(proxy.port) ||
	    strspn(colon + 1, "0123456789") < n ||
	    strtol(colon + 1, NULL, 10) < 1 || strtol(colon + 1, NULL, 10) > 65535)
		return fail(EXIT_USAGE, "%s: bad port", from);
	else
		memcpy(proxy.port, colon + 1, n);
	return 0;
}

/*
 * no_proxy: names separated by commas or spaces; "*" is every host; a
 * name matches itself and its subdomains (".example.com" or
 * "example.com"); ":port" limits an entry to one port.
 */
static int
proxy_skip(const char *host, const char *port)
{
	const char *s = no_proxy, *e, *c;
	size_t	 n, hl = strlen(host);

	if (s == NULL)
		return 0;
	for (; *s; s = e) {
		s += strspn(s, ", \t");
		e = s + strcspn(s, ", \t");
		n = (size_t)(e - s);
		if (n == 0)
			continue;
		if (n == 1 && *s == '*')
			return 1;
		if ((c = memchr(s, ':', n)) != NULL) {
			if (strlen(port) != (size_t)(e - c - 1) ||
			    strncmp(c + 1, port, strlen(port)) != 0)
				continue;
			n = (size_t)(c - s);
		}
		if (n > 0 && *s == '.') {
			s++;
			n--;
		}
		if (n == 0 || n > hl || strncasecmp(host + hl - n, s, n) != 0)
			continue;
		if (hl == n || host[hl - n - 1] == '.')
			return 1;
	}
	return 0;
}

/*
 * A socket to host:port, through the proxy's tunnel if there is one.  The
 * proxy's reply is read a byte at a time, so nothing of the tunnel's
 * stream is taken.  A refusal (403, 407) is final; 502-504 may pass.
 */
static int
net_open(const char *host, const char *port, int timeout)
{
	char	 req[HOST_MAX + sizeof(proxy.auth) + 128], line[HTTP_LINE_MAX];
	size_t	 n = 0;
	ssize_t	 r;
	int	 fd, status = 0, nl = 0;

	if (proxy.host[0] == '\0' || proxy_skip(host, port))
		return net_connect(host, port, timeout);
	net_role = "proxy ";
	fd = net_connect(proxy.host, proxy.port, timeout);
	net_role = "";
	if (fd == -1)
		return -1;
	bfmt(req, sizeof(req), "CONNECT %s:%s HTTP/1.1\r\nHost: %s:%s\r\n"
	    "%s%s%s\r\n", host, port, host, port, proxy.auth[0] ?
	    "Proxy-Authorization: Basic " : "", proxy.auth,
	    proxy.auth[0] ? "\r\n" : "");
	n = strlen(req);
	net_deadline_set(timeout);
	r = net_wait(fd, POLLOUT, timeout) == 0 ? write(fd, req, n) : -1;
	wipe(req, sizeof(req));
	if (r >= 0 && (size_t)r != n) {
		errno = EIO;
		r = -1;
	}
	n = 0;
	while (r >= 0 && nl < 2) {
		if (n == sizeof(line) - 1 || net_wait(fd, POLLIN, timeout) == -1 ||
		    (r = read(fd, line + n, 1)) != 1) {
			if (r == 0 || n == sizeof(line) - 1)
				errno = ECONNRESET;
			r = -1;
			break;
		}
		if (line[n] == '\n')
			nl++;
		else if (line[n] != '\r')
			nl = 0;
		n++;
	}
	line[n] = '\0';
	net_deadline_set(0);
	if (r < 0) {
		close(fd);
		return err1("proxy %s port %s: tunnel to %s:", proxy.host,
		    proxy.port, host);
	}
	if (sscanf(line, "HTTP/1.%*1d %3d", &status) != 1 || status != 200) {
		close(fd);
		net_permanent = status != 502 && status != 503 && status != 504;
		line[strcspn(line, "\r\n")] = '\0';
		tidy(line);
		return fail(status == 407 ? EXIT_USAGE : EXIT_FAIL, "proxy %s "
		    "port %s refused a tunnel to %s: %.100s%s", proxy.host,
		    proxy.port, host, line, status == 407 ? " (check the "
		    "user name and password in the proxy URL)" : "");
	}
	debug(2, "tunnel to %s port %s through proxy %s", host, port,
	    proxy.host);
	return fd;
}

/* == 6. TLS and transport ================================================= */

/*
 * Trust anchors come from a PEM bundle: --cacert, the profile's cacert,
 * SSL_CERT_FILE, or the first common system bundle.  They are decoded
 * once, at the first TLS connection; this is the one place that allocates.
 *
 * conn_open() connects and starts TLS with SNI and full chain and host
 * name verification (BearSSL's minimal X.509 engine).  conn_read,
 * conn_write, conn_getline and conn_flush move bytes; conn_close tells a
 * clean TLS close from a truncated one.  All report their own errors.
 */
static const char *ca_paths[] = {
	"/etc/ssl/certs/ca-certificates.crt",	/* Debian, Alpine, Arch */
	"/etc/pki/tls/certs/ca-bundle.crt",	/* Fedora, RHEL */
	"/etc/ssl/ca-bundle.pem",		/* openSUSE */
	"/etc/ssl/cert.pem",			/* OpenBSD, macOS, Alpine */
	NULL
};
static const char *ca_file;			/* chosen by main */
static br_x509_trust_anchor *anchors;
static size_t nanchors;

/* A growing byte buffer, for BearSSL's decoders' output callbacks. */
struct ca_buf {
	unsigned char *p;
	size_t	 len, cap;
};

struct ca_load {
	struct ca_buf der;			/* the certificate being decoded */
	struct ca_buf dn;			/* its subject name */
};

static void
ca_append(void *ctx, const void *p, size_t n)
{
	struct ca_buf *b = ctx;
	unsigned char *q;

	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2;
		if ((q = realloc(b->p, b->cap)) == NULL)
			BUG("out of memory loading CA bundle");
		b->p = q;
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

static void *
xdup(const void *p, size_t n)
{
	void	*q;

	if ((q = malloc(n ? n : 1)) == NULL)
		BUG("out of memory loading CA bundle");
	memcpy(q, p, n);
	return q;
}

/* Turn one DER certificate into a trust anchor; non-fatal if unusable. */
static void
ca_add(struct ca_load *l)
{
	br_x509_decoder_context dc;
	br_x509_pkey *pk;
	br_x509_trust_anchor *ta, *n;

	l->dn.len = 0;
	br_x509_decoder_init(&dc, ca_append, &l->dn);
	br_x509_decoder_push(&dc, l->der.p, l->der.len);
	if ((pk = br_x509_decoder_get_pkey(&dc)) == NULL)
		return;
	if ((n = realloc(anchors, (nanchors + 1) * sizeof(*anchors))) == NULL)
		BUG("out of memory loading CA bundle");
	anchors = n;
	ta = &anchors[nanchors];
	ta->dn.data = xdup(l->dn.p, l->dn.len);
	ta->dn.len = l->dn.len;
	ta->flags = br_x509_decoder_isCA(&dc) ? BR_X509_TA_CA : 0;
	ta->pkey = *pk;
	if (pk->key_type == BR_KEYTYPE_RSA) {
		ta->pkey.key.rsa.n = xdup(pk->key.rsa.n, pk->key.rsa.nlen);
		ta->pkey.key.rsa.e = xdup(pk->key.rsa.e, pk->key.rsa.elen);
	} else if (pk->key_type == BR_KEYTYPE_EC) {
		ta->pkey.key.ec.q = xdup(pk->key.ec.q, pk->key.ec.qlen);
	} else
		return;
	nanchors++;
}

/* A CA bundle that cannot be used is a configuration error: final. */
static int
ca_fail(const char *fmt, const char *path)
{
	net_permanent = 1;
	return fail(EXIT_USAGE, fmt, path);
}

static int
ca_load(void)
{
	br_pem_decoder_context pc;
	struct ca_load l;
	unsigned char buf[4096];
	const char *path = ca_file;
	size_t	 off, n;
	ssize_t	 r;
	int	 fd, i, inobj = 0;

	if (anchors != NULL)
		return 0;
	for (i = 0; path == NULL && ca_paths[i] != NULL; i++)
		if (access(ca_paths[i], R_OK) == 0)
			path = ca_paths[i];
	if (path == NULL)
		return ca_fail("no CA bundle found: use --cacert FILE or "
		    "SSL_CERT_FILE", "");
	if ((fd = open(path, O_RDONLY)) == -1)
		return ca_fail("CA bundle %s:", path);
	memset(&l, 0, sizeof(l));
	br_pem_decoder_init(&pc);
	while ((r = read(fd, buf, sizeof(buf))) > 0) {
		for (off = 0; off < (size_t)r; off += n) {
			n = br_pem_decoder_push(&pc, buf + off, (size_t)r - off);
			switch (br_pem_decoder_event(&pc)) {
			case BR_PEM_BEGIN_OBJ:
				inobj = strcmp(br_pem_decoder_name(&pc),
				    "CERTIFICATE") == 0;
				l.der.len = 0;
				br_pem_decoder_setdest(&pc,
				    inobj ? ca_append : NULL, &l.der);
				break;
			case BR_PEM_END_OBJ:
				if (inobj)
					ca_add(&l);
				inobj = 0;
				break;
			case BR_PEM_ERROR:
				close(fd);
				free(l.der.p);
				free(l.dn.p);
				return ca_fail("CA bundle %s: not PEM", path);
			}
		}
	}
	close(fd);
	free(l.der.p);
	free(l.dn.p);
	if (nanchors == 0)
		return ca_fail("CA bundle %s: no certificates", path);
	debug(2, "%zu trust anchor%s from %s", nanchors, nanchors == 1 ? "" : "s",
	    path);
	return 0;
}

static int
conn_fail(struct conn *c, const char *fmt, ...)
{
	va_list	 ap;
	char	 msg[512];

	if (c->err)
		return -1;
	c->err = 1;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return err1("%s: %s", c->host, msg);
}

/* The peer broke the protocol: reported once, and not worth retrying. */
static int
conn_improper(struct conn *c, const char *what)
{
	net_permanent = 1;
	return conn_fail(c, "%s", what);
}

/* BearSSL's low-level callbacks: the socket, with the read/write timeout. */
static int
sock_read(void *ctx, unsigned char *buf, size_t n)
{
	struct conn *c = ctx;
	ssize_t	 r;

	for (;;) {
		if (net_wait(c->fd, POLLIN, c->timeout) == -1)
			return -1;
		r = read(c->fd, buf, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r == 0)
			errno = ECONNRESET;
		return r > 0 ? (int)r : -1;
	}
}

static int
sock_write(void *ctx, const unsigned char *buf, size_t n)
{
	struct conn *c = ctx;
	ssize_t	 w;

	for (;;) {
		if (net_wait(c->fd, POLLOUT, c->timeout) == -1)
			return -1;
		w = write(c->fd, buf, n);
		if (w < 0 && errno == EINTR)
			continue;
		return w > 0 ? (int)w : -1;
	}
}

/* Describe why the TLS engine stopped, for the one error line. */
static const char *
tls_why(struct conn *c)
{
	static char why[128];
	int	 e = br_ssl_engine_last_error(&c->sc.eng);

	if (e == BR_ERR_OK)
		return "connection closed";
	if (e == BR_ERR_IO)
		return errno == ETIMEDOUT ? "timed out" :
		    "connection closed without TLS close_notify";
	if (e == BR_ERR_X509_NOT_TRUSTED)
		return "certificate not trusted (see --cacert)";
	if (e == BR_ERR_X509_BAD_SERVER_NAME)
		return "certificate does not match the host name";
	if (e == BR_ERR_X509_EXPIRED)
		return "certificate expired or not yet valid";
	if (e >= BR_ERR_RECV_FATAL_ALERT)
		bfmt(why, sizeof(why), "TLS alert %d from server",
		    e - BR_ERR_RECV_FATAL_ALERT);
	else if (e >= BR_ERR_SEND_FATAL_ALERT)
		bfmt(why, sizeof(why), "TLS alert %d sent",
		    e - BR_ERR_SEND_FATAL_ALERT);
	else
		bfmt(why, sizeof(why), "TLS error %d", e);
	return why;
}

static long
tls_rd(struct conn *c, unsigned char *buf, size_t n)
{
	int	 r = br_sslio_read(&c->ioc, buf, n);

	if (r > 0)
		return r;
	if (br_ssl_engine_last_error(&c->sc.eng) == BR_ERR_OK)
		return 0;		/* close_notify: a clean end */
	return conn_fail(c, "%s", tls_why(c));
}

static long
tls_wr(struct conn *c, const unsigned char *buf, size_t n)
{
	if (br_sslio_write_all(&c->ioc, buf, n) != 0)
		return conn_fail(c, "%s", tls_why(c));
	return (long)n;
}

static void
conn_close(struct conn *c)
{
	if (c->fd != -1) {
		close(c->fd);
		c->fd = -1;
	}
	c->host[0] = '\0';
	c->roff = c->rlen = 0;
	c->err = 0;
}

/* Connect to host:port and complete the TLS handshake. */
static int
conn_open(struct conn *c, const char *host, const char *port, int timeout)
{
	int	 rc;

	conn_close(c);
	if (ca_load() == -1)
		return -1;
	if (scopy(c->host, sizeof(c->host), host) == -1 ||
	    scopy(c->port, sizeof(c->port), port) == -1)
		return err1("host name too long: %.64s", host);
	c->timeout = timeout;
	if ((c->fd = net_open(host, port, timeout)) == -1) {
		c->host[0] = '\0';
		return -1;
	}
	br_ssl_client_init_full(&c->sc, &c->xc, anchors, nanchors);
	/* Microsoft requires TLS 1.2 or newer; BearSSL's newest is 1.2. */
	br_ssl_engine_set_versions(&c->sc.eng, BR_TLS12, BR_TLS12);
	br_ssl_engine_set_buffer(&c->sc.eng, c->iobuf, sizeof(c->iobuf), 1);
	br_ssl_client_reset(&c->sc, host, 0);
	br_sslio_init(&c->ioc, &c->sc.eng, sock_read, c, sock_write, c);
	c->rd = tls_rd;
	c->wr = tls_wr;
	/* Flushing nothing drives the handshake to completion. */
	net_deadline_set(timeout);
	rc = br_sslio_flush(&c->ioc);
	net_deadline_set(0);
	if (rc != 0 ||
	    (br_ssl_engine_current_state(&c->sc.eng) & BR_SSL_CLOSED)) {
		net_permanent = br_ssl_engine_last_error(&c->sc.eng) != BR_ERR_IO;
		conn_fail(c, "TLS handshake: %s", tls_why(c));
		conn_close(c);
		return -1;
	}
	debug(2, "connected to %s port %s", host, port);
	return 0;
}

/* Read up to n bytes: the read-ahead first.  0 at a clean end. */
static long
conn_read(struct conn *c, void *buf, size_t n)
{
	long	 r;

	if (c->err)
		return -1;
	if (c->rlen > c->roff) {
		if (n > c->rlen - c->roff)
			n = c->rlen - c->roff;
		memcpy(buf, c->rbuf + c->roff, n);
		c->roff += n;
		return (long)n;
	}
	r = c->rd(c, buf, n);
	if (r < 0)
		c->err = 1;
	return r;
}

static int
conn_fill(struct conn *c)
{
	long	 r;

	if (c->roff > 0) {
		memmove(c->rbuf, c->rbuf + c->roff, c->rlen - c->roff);
		c->rlen -= c->roff;
		c->roff = 0;
	}
	if ((r = c->rd(c, c->rbuf + c->rlen, sizeof(c->rbuf) - c->rlen)) < 0) {
		c->err = 1;
		return -1;
	}
	if (r == 0)
		return conn_fail(c, "connection closed in the middle of a response");
	c->rlen += (size_t)r;
	return 0;
}

/*
 * Read one line ending in LF (CR before it removed) into buf of sz bytes.
 * A line longer than sz - 1 is a protocol error.  Returns its length.
 */
static long
conn_getline(struct conn *c, char *buf, size_t sz)
{
	unsigned char *nl;
	size_t	 n;

	for (;;) {
		if (c->err)
			return -1;
		nl = memchr(c->rbuf + c->roff, '\n', c->rlen - c->roff);
		if (nl != NULL)
			break;
		if (c->rlen - c->roff >= sz)
			return conn_improper(c, "line too long in response");
		if (conn_fill(c) == -1)
			return -1;
	}
	n = (size_t)(nl - (c->rbuf + c->roff));
	if (n >= sz)
		return conn_improper(c, "line too long in response");
	memcpy(buf, c->rbuf + c->roff, n);
	c->roff += n + 1;
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	buf[n] = '\0';
	return (long)n;
}

static int
conn_write(struct conn *c, const void *buf, size_t n)
{
	if (c->err)
		return -1;
	if (n > 0 && c->wr(c, buf, n) < 0) {
		c->err = 1;
		return -1;
	}
	return 0;
}

static int
conn_flush(struct conn *c)
{
	if (c->err)
		return -1;
	if (c->wr == tls_wr && br_sslio_flush(&c->ioc) != 0)
		return conn_fail(c, "%s", tls_why(c));
	return 0;
}

/* == 7. HTTP/1.1 ========================================================== */

/*
 * Framing only, no policy (RFC 9112).  http_send writes a request with
 * Host, User-Agent, Content-Length and the caller's header lines, then the
 * body from memory or from a file region.  http_recv_head reads the status
 * line and keeps the few headers odcp uses.  http_read returns body bytes
 * for Content-Length, chunked and close-delimited bodies; http_discard
 * drains what the caller does not want.
 */
enum { CH_SIZE, CH_DATA, CH_DATA_END, CH_TRAILER, CH_DONE };

static int
http_send(struct conn *c, const char *hostport, const struct http_req *q)
{
	static char body[IO_BUF];
	char	 head[HTTP_LINE_MAX + 1024];
	int64_t	 len = q->fd >= 0 ? q->flen : (int64_t)q->blen, done;
	ssize_t	 r;
	size_t	 want;

	if (strlen(q->target) > URL_MAX)
		return err1("%s: request target too long", c->host);
	if (snprintf(head, sizeof(head), "%s %s HTTP/1.1\r\nHost: %s\r\n"
	    "User-Agent: %s\r\n", q->method, q->target, hostport,
	    USER_AGENT) >= (int)sizeof(head))
		return err1("%s: request too long", c->host);
	if (conn_write(c, head, strlen(head)) == -1)
		return -1;
	if (q->hdrs != NULL && conn_write(c, q->hdrs, strlen(q->hdrs)) == -1)
		return -1;
	if (q->has_body || len > 0) {
		bfmt(head, sizeof(head), "Content-Length: %" PRId64 "\r\n", len);
		if (conn_write(c, head, strlen(head)) == -1)
			return -1;
	}
	if (conn_write(c, "\r\n", 2) == -1)
		return -1;
	if (q->fd < 0)
		return conn_write(c, q->body, q->blen) == -1 ? -1 :
		    conn_flush(c);
	for (done = 0; done < len; done += r) {
		want = len - done < (int64_t)sizeof(body) ?
		    (size_t)(len - done) : sizeof(body);
		/* the local file failing is no reason to try again */
		if ((r = pread_full(q->fd, body, want, q->off + done)) <= 0) {
			net_permanent = 1;
			return err1(r == 0 ? "the local file shrank while being "
			    "sent" : "the local file: read:");
		}
		if (q->tap != NULL)
			q->tap(q->tapctx, q->off + done, (unsigned char *)body,
			    (size_t)r);
		if (conn_write(c, body, (size_t)r) == -1)
			return -1;
	}
	return conn_flush(c);
}

/* Headers odcp reads, matched case-insensitively. */
static void
http_header(struct http_resp *r, char *line)
{
	char	*v = strchr(line, ':');
	size_t	 n;
	int64_t	 n64;

	if (v == NULL)
		return;
	*v++ = '\0';
	v += strspn(v, " \t");
	n = strlen(v);
	while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
		v[--n] = '\0';
	if (strcasecmp(line, "Content-Length") == 0) {
		/* RFC 9112 6.3: differing or malformed lengths are refused */
		if (parse_int(v, 0, INT64_MAX, &n64) == -1 ||
		    (r->clen >= 0 && r->clen != n64))
			r->clen = -2;
		else if (r->clen != -2)
			r->clen = n64;
	} else if (strcasecmp(line, "Transfer-Encoding") == 0)
		r->chunked = strcasecmp(v, "chunked") == 0 ? 1 : -1;
	else if (strcasecmp(line, "Connection") == 0) {
		if (strcasecmp(v, "close") == 0)
			r->close = 1;
	} else if (strcasecmp(line, "Location") == 0)
		snprintf(r->location, sizeof(r->location), "%s", v);
	else if (strcasecmp(line, "Retry-After") == 0)
		snprintf(r->retry_after, sizeof(r->retry_after), "%s", v);
	else if (strcasecmp(line, "Content-Range") == 0)
		snprintf(r->content_range, sizeof(r->content_range), "%s", v);
	else if (strcasecmp(line, "Content-Type") == 0)
		snprintf(r->content_type, sizeof(r->content_type), "%s", v);
	else if (strcasecmp(line, "Date") == 0)
		snprintf(r->date, sizeof(r->date), "%s", v);
}

/*
 * Read the status line and headers.  Interim 1xx responses are skipped.
 * head_only: the response to a HEAD request has no body.
 */
static int
http_recv_head(struct conn *c, struct http_resp *r, int head_only)
{
	char	 line[HTTP_LINE_MAX];
	int	 minor, status, n, i, interim = 0;
	long	 len;

	do {
		memset(r, 0, sizeof(*r));
		r->clen = -1;
		if (conn_getline(c, line, sizeof(line)) < 0)
			return -1;
		n = 0;
		if (sscanf(line, "HTTP/1.%1d %3d%n", &minor, &status, &n) != 2 ||
		    n != 12 || (line[12] != ' ' && line[12] != '\0') ||
		    status < 100)
			return conn_improper(c, "improper status line");
		r->status = status;
		r->close = minor == 0;
		for (i = 0;; i++) {
			if (i > 200)
				return conn_improper(c, "too many header lines");
			if ((len = conn_getline(c, line, sizeof(line))) < 0)
				return -1;
			if (len == 0)
				break;
			http_header(r, line);
		}
		/* interim responses: at most a few (RFC 9110 15.2) */
	} while (r->status < 200 && ++interim < 10);
	if (r->status < 200)
		return conn_improper(c, "too many interim responses");
	if (r->clen == -2 || r->chunked == -1)
		return conn_improper(c, "improper body framing");
	/* RFC 9112 6.3: no body for HEAD, 1xx, 204 and 304. */
	if (head_only || r->status == 204 || r->status == 304 ||
	    (r->clen == 0 && !r->chunked)) {
		r->done = 1;
		return 0;
	}
	if (r->chunked) {
		r->clen = -1;
		r->cstate = CH_SIZE;
	} else if (r->clen >= 0)
		r->left = r->clen;
	else
		r->close = 1;		/* delimited by the end of the connection */
	return 0;
}

/* Chunked framing (RFC 9112 7.1): the next chunk-size line, or trailers. */
static int
http_chunk(struct conn *c, struct http_resp *r)
{
	char	 line[HTTP_LINE_MAX];
	const char *p;
	int64_t	 v = 0;
	int	 h, n;

	if (r->cstate == CH_DATA_END) {
		if (conn_getline(c, line, sizeof(line)) < 0)
			return -1;
		if (line[0] != '\0')
			return conn_improper(c, "chunk not followed by CRLF");
		r->cstate = CH_SIZE;
	}
	if (r->cstate == CH_SIZE) {
		if (conn_getline(c, line, sizeof(line)) < 0)
			return -1;
		for (p = line; (h = hexval(*p)) >= 0; p++) {
			if (v > (INT64_MAX >> 4))
				return conn_improper(c, "chunk size too large");
			v = v << 4 | h;
		}
		/* chunk-ext (after ';') is allowed and ignored */
		if (p == line || (*p != '\0' && *p != ';' && *p != ' ' &&
		    *p != '\t'))
			return conn_improper(c, "improper chunk size line");
		if (v > 0) {
			r->left = v;
			r->cstate = CH_DATA;
			return 0;
		}
		r->cstate = CH_TRAILER;
	}
	for (n = 0; r->cstate == CH_TRAILER; n++) {
		if (n > 200)
			return conn_improper(c, "too many trailer lines");
		if (conn_getline(c, line, sizeof(line)) < 0)
			return -1;
		if (line[0] == '\0')
			r->cstate = CH_DONE;
	}
	r->done = 1;
	return 0;
}

/* Body bytes into buf; 0 at the end of the body; -1 on error. */
static long
http_read(struct conn *c, struct http_resp *r, void *buf, size_t n)
{
	long	 got;

	if (r->done || n == 0)
		return 0;
	if (r->chunked && r->cstate != CH_DATA) {
		if (http_chunk(c, r) == -1)
			return -1;
		if (r->done)
			return 0;
	}
	if (r->chunked || r->clen >= 0) {
		if ((int64_t)n > r->left)
			n = (size_t)r->left;
	}
	if ((got = conn_read(c, buf, n)) < 0)
		return -1;
	if (got == 0) {
		if (r->chunked || r->clen >= 0)
			return conn_fail(c, "connection closed in the middle of a body");
		r->done = 1;
		return 0;
	}
	if (r->chunked || r->clen >= 0) {
		r->left -= got;
		if (r->left == 0) {
			if (r->chunked)
				r->cstate = CH_DATA_END;
			else
				r->done = 1;
		}
	}
	return got;
}

/* Read the rest of a body and throw it away (capped: 1 MiB). */
static int
http_discard(struct conn *c, struct http_resp *r)
{
	char	 buf[4096];
	long	 n;
	int64_t	 total = 0;

	while ((n = http_read(c, r, buf, sizeof(buf))) > 0)
		if ((total += n) > 1024 * 1024) {
			r->close = 1;
			return 0;
		}
	return n < 0 ? -1 : 0;
}

/*
 * Connections are kept per host (RFC 9112 9.3 persistence): a small pool,
 * reused while both sides keep it open and every body was read to its end.
 * http_exchange() sends one request to an absolute https URL and reads the
 * response head; http_done() returns the connection to the pool, closing
 * it unless the body was fully read.  A request that fails on a reused
 * connection is sent once more on a fresh one (the server may have closed
 * an idle connection just as we wrote), unless it must not be sent twice
 * (q->once).
 */
struct url {
	char	 host[HOST_MAX];
	char	 port[8];
	char	 hostport[HOST_MAX + 8];
	const char *target;		/* points into the parsed string */
};

static struct conn pool[CONN_POOL];
static int pool_next;

/*
 * A URL odcp will not use.  The URL itself is not shown: pre-authenticated
 * URLs are credentials.  Trying again cannot help.
 */
static int
url_bad(const char *why)
{
	net_permanent = 1;
	return err1("%s", why);
}

/* Split "https://host[:port]/target".  Only https is ever spoken. */
static int
url_parse(const char *s, struct url *u)
{
	const char *h, *e, *colon;
	size_t	 n;

	if (strncasecmp(s, "https://", 8) != 0)
		return url_bad("not an https URL");
	for (h = s; *h; h++)	/* it goes into a request line as it is */
		if ((unsigned char)*h <= ' ' || *h == 0x7f)
			return url_bad("URL with a space or control character");
	h = s + 8;
	e = h + strcspn(h, "/?#");
	colon = memchr(h, ':', (size_t)(e - h));
	n = (size_t)((colon ? colon : e) - h);
	if (n == 0 || n >= sizeof(u->host) || memchr(h, '@', (size_t)(e - h)))
		return url_bad("bad host in a URL");
	memcpy(u->host, h, n);
	u->host[n] = '\0';
	if (colon != NULL) {
		n = (size_t)(e - colon - 1);
		if (n == 0 || n >= sizeof(u->port) ||
		    strspn(colon + 1, "0123456789") < n)
			return url_bad("bad port in a URL");
		memcpy(u->port, colon + 1, n);
		u->port[n] = '\0';
		bfmt(u->hostport, sizeof(u->hostport), "%s:%s", u->host,
		    u->port);
	} else {
		strcpy(u->port, "443");
		bfmt(u->hostport, sizeof(u->hostport), "%s", u->host);
	}
	u->target = *e == '/' ? e : "/";
	if (*e == '?')		/* "https://h?q": origin-form needs a path */
		return url_bad("URL without a path");
	return 0;
}

/* A pooled connection to u, opened if needed; fresh: never reuse. */
static struct conn *
pool_get(const struct url *u, int timeout, int fresh, int *reused)
{
	struct pollfd pfd;
	struct conn *c;
	int	 i;

	for (i = 0; i < CONN_POOL; i++) {
		c = &pool[i];
		if (c->fd == -1 || strcmp(c->host, u->host) != 0 ||
		    strcmp(c->port, u->port) != 0)
			continue;
		pfd.fd = c->fd;
		pfd.events = POLLIN;
		/* readable while idle: closed by the server, or garbage */
		if (fresh || c->err || poll(&pfd, 1, 0) != 0 ||
		    c->rlen != c->roff) {
			conn_close(c);
			break;
		}
		*reused = 1;
		c->timeout = timeout;
		return c;
	}
	if (i == CONN_POOL) {
		for (i = 0; i < CONN_POOL && pool[i].fd != -1; i++)
			;
		if (i == CONN_POOL)
			i = pool_next++ % CONN_POOL;
	}
	c = &pool[i];
	*reused = 0;
	if (conn_open(c, u->host, u->port, timeout) == -1)
		return NULL;
	return c;
}

static void
pool_init(void)
{
	int	 i;

	for (i = 0; i < CONN_POOL; i++)
		pool[i].fd = -1;
}

static void
http_done(struct conn *c, struct http_resp *r)
{
	if (c != NULL && (!r->done || r->close || c->err))
		conn_close(c);
}

/* A response whose body nobody wants: drained, connection given back. */
static void
http_drop(struct conn *c, struct http_resp *r)
{
	http_discard(c, r);
	http_done(c, r);
}

/*
 * -vv: the header lines odcp sent and the ones it read.  Authorization
 * is never shown, nor a Location that may be a pre-authenticated URL.
 */
static void
http_trace(const struct http_req *q, const struct http_resp *r, int secret)
{
	const char *p = q->hdrs, *e;

	for (; p != NULL && *p; p = e + 2) {
		if ((e = strstr(p, "\r\n")) == NULL)
			break;
		if (strncasecmp(p, "Authorization:", 14) == 0)
			fprintf(stderr, "odcp: > Authorization: <redacted>\n");
		else
			fprintf(stderr, "odcp: > %.*s\n", (int)(e - p), p);
	}
	if (q->fd >= 0 || q->has_body)
		fprintf(stderr, "odcp: > Content-Length: %" PRId64 "\n",
		    q->fd >= 0 ? q->flen : (int64_t)q->blen);
	if (r->clen >= 0)
		fprintf(stderr, "odcp: < Content-Length: %" PRId64 "\n", r->clen);
	if (r->chunked)
		fprintf(stderr, "odcp: < Transfer-Encoding: chunked\n");
	if (r->location[0])
		fprintf(stderr, "odcp: < Location: <redacted%s>\n",
		    secret ? "" : ": a pre-authenticated URL");
	if (r->content_range[0])
		fprintf(stderr, "odcp: < Content-Range: %s\n", r->content_range);
	if (r->retry_after[0])
		fprintf(stderr, "odcp: < Retry-After: %s\n", r->retry_after);
	if (r->content_type[0])
		fprintf(stderr, "odcp: < Content-Type: %s\n", r->content_type);
	if (r->close)
		fprintf(stderr, "odcp: < Connection: close\n");
}

/*
 * Send q to url and read the response head into r; *cp gets the
 * connection to read the body from.  secret: the URL itself is a
 * credential and is never logged in full.
 */
static int
http_exchange(const char *url, struct http_req *q, struct http_resp *r,
    struct conn **cp, int timeout, int secret)
{
	char	 shown[256];
	struct url u;
	struct conn *c;
	int	 reused, tries, ok, was;

	net_permanent = 0;
	if (url_parse(url, &u) == -1)
		return -1;
	q->target = u.target;
	q->resent = 0;
	log_url(shown, sizeof(shown), url, !secret);
	for (tries = 0; tries < 2; tries++) {
		q->resent = tries > 0;
		if ((c = pool_get(&u, timeout, tries > 0, &reused)) == NULL)
			return -1;
		/* the first failure on a reused connection stays quiet */
		was = hush;
		hush = was || (reused && tries == 0 && !q->once);
		ok = http_send(c, u.hostport, q) == 0;
		net_deadline_set(timeout);	/* the whole head within it */
		ok = ok && http_recv_head(c, r,
		    strcmp(q->method, "HEAD") == 0) == 0;
		net_deadline_set(0);
		hush = was;
		if (ok) {
			debug(1, "%s %s -> %d", q->method, shown, r->status);
			if (verbose >= 2)
				http_trace(q, r, secret);
			*cp = c;
			return 0;
		}
		conn_close(c);
		if (!reused || tries > 0 || q->once)
			return -1;
		held[0] = '\0';
		debug(1, "%s: reused connection failed, reconnecting", u.host);
	}
	return -1;
}

/*
 * Retry timing, for sign-in (§10) and Graph (§11).  retries is the budget
 * of attempts after the first (--retries).  The wait is the response's
 * Retry-After, in seconds or as an HTTP-date taken relative to the
 * response's own Date (RFC 9110 10.2.3), so a skewed local clock does not
 * matter; without one, exponential backoff with jitter: 1, 2, 4 .. 32 s
 * plus up to as much again.  ODCP_RETRY_SCALE (tests only) shrinks every
 * wait by a factor.
 */
static int retries = RETRY_DEFAULT;
static double retry_scale = 1.0;

/* Seconds to wait before attempt+1; -1: Retry-After beyond RETRY_AFTER_MAX. */
static int64_t
retry_wait(const struct http_resp *r, int attempt)
{
	int64_t	 v = -1, when, now;
	const char *ra = r != NULL ? r->retry_after : "";

	if (ra[0] && parse_int(ra, 0, INT64_MAX, &v) == -1) {
		v = -1;
		if (strspn(ra, "0123456789") == strlen(ra))
			return -1;	/* seconds past counting: too long */
		if (http_date(ra, &when) == 0) {
			if (r->date[0] == '\0' || http_date(r->date, &now) == -1)
				now = (int64_t)time(NULL);
			v = when > now ? when - now : 0;
		}
	}
	if (v >= 0)
		return v <= RETRY_AFTER_MAX ? v : -1;
	v = (int64_t)1 << (attempt < 5 ? attempt : 5);
	return v + rand() % (v + 1);
}

/* Sleep s seconds; a long wait is announced, so odcp never looks hung. */
static void
retry_nap(int64_t s, const char *why)
{
	struct timespec ts;
	double	 d = (double)s * retry_scale;

	if (s >= 30 && !quiet)
		fprintf(stderr, "odcp: %s; waiting %" PRId64 " s\n", why, s);
	else
		debug(1, "%s; retrying in %" PRId64 " s", why, s);
	ts.tv_sec = (time_t)d;
	ts.tv_nsec = (long)((d - (double)ts.tv_sec) * 1e9);
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

/* == 8. JSON pull tokenizer =============================================== */

/*
 * A strict RFC 8259 tokenizer that pulls bytes from a read function (an
 * HTTP body, or memory in the tests) and hands back one event at a time:
 * json_next().  Keys come as JSON_KEY, distinct from string values.  The
 * text of a KEY, STR or NUM is in j->str, UTF-8 (escapes and surrogate
 * pairs decoded), NUL-terminated, with j->slen for embedded NULs.  Memory
 * is fixed: JSON_DEPTH_MAX levels and JSON_STR_MAX bytes per string; a
 * longer string is an error, except under json_skip(), which scans values
 * without storing them.  Errors are sticky and say what and where.
 */
static const char *json_event_names[JSON_EV_MAX] = {
	"ERR", "END", "OBJ", "OBJ_END", "ARR", "ARR_END",
	"KEY", "STR", "NUM", "TRUE", "FALSE", "NULL"
};

enum { W_VALUE, W_VALUE_OR_END, W_KEY, W_KEY_OR_END, W_COMMA_OR_END, W_DONE };

static void
json_init(struct json *j, json_read_fn rd, void *rctx)
{
	j->rd = rd;
	j->rctx = rctx;
	j->off = j->len = 0;
	j->eof = j->err = j->rderr = j->depth = j->skip = 0;
	j->pos = 0;
	j->want = W_VALUE;
	j->slen = 0;
	j->str[0] = j->msg[0] = '\0';
}

static enum json_ev
json_fail(struct json *j, const char *what)
{
	if (!j->err) {
		j->err = 1;
		snprintf(j->msg, sizeof(j->msg), "%s at byte %" PRId64 " of "
		    "the answer", what, j->pos);
	}
	return JSON_ERR;
}

/* The next byte without consuming it; -1 at the end, -2 on read error. */
static int
json_peek(struct json *j)
{
	long	 n;

	if (j->off < j->len)
		return j->buf[j->off];
	if (j->eof)
		return -1;
	n = j->rd(j->rctx, j->buf, sizeof(j->buf));
	if (n < 0) {
		j->eof = 1;
		j->rderr = !j->err;
		json_fail(j, "read error");
		return -2;
	}
	j->off = 0;
	j->len = (size_t)n;
	if (n == 0) {
		j->eof = 1;
		return -1;
	}
	return j->buf[0];
}

static int
json_getc(struct json *j)
{
	int	 c = json_peek(j);

	if (c >= 0) {
		j->off++;
		j->pos++;
	}
	return c;
}

static int
json_ws(struct json *j)
{
	int	 c;

	while ((c = json_peek(j)) == ' ' || c == '\t' || c == '\n' || c == '\r')
		json_getc(j);
	return c;
}

static int
json_put(struct json *j, const char *p, size_t n)
{
	if (j->skip)
		return 0;
	if (j->slen + n > JSON_STR_MAX) {
		json_fail(j, "string longer than JSON_STR_MAX");
		return -1;
	}
	memcpy(j->str + j->slen, p, n);
	j->slen += n;
	return 0;
}

static int
json_hex4(struct json *j, unsigned *out)
{
	int	 i, c, h;

	*out = 0;
	for (i = 0; i < 4; i++) {
		c = json_getc(j);
		if ((h = hexval(c)) < 0) {
			json_fail(j, "bad \\u escape");
			return -1;
		}
		*out = *out << 4 | (unsigned)h;
	}
	return 0;
}

static int
json_utf8(struct json *j, unsigned cp)
{
	char	 b[4];
	size_t	 n;

	if (cp < 0x80) {
		b[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		b[0] = (char)(0xc0 | cp >> 6);
		b[1] = (char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		b[0] = (char)(0xe0 | cp >> 12);
		b[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		b[2] = (char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		b[0] = (char)(0xf0 | cp >> 18);
		b[1] = (char)(0x80 | (cp >> 12 & 0x3f));
		b[2] = (char)(0x80 | (cp >> 6 & 0x3f));
		b[3] = (char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	return json_put(j, b, n);
}

/* \uXXXX, with a following \uXXXX for a surrogate pair (RFC 8259 7). */
static int
json_unicode(struct json *j)
{
	unsigned hi, lo;

	if (json_hex4(j, &hi) == -1)
		return -1;
	if (hi >= 0xdc00 && hi <= 0xdfff) {
		json_fail(j, "lone low surrogate");
		return -1;
	}
	if (hi >= 0xd800 && hi <= 0xdbff) {
		if (json_getc(j) != '\\' || json_getc(j) != 'u') {
			json_fail(j, "high surrogate without a low one");
			return -1;
		}
		if (json_hex4(j, &lo) == -1)
			return -1;
		if (lo < 0xdc00 || lo > 0xdfff) {
			json_fail(j, "high surrogate without a low one");
			return -1;
		}
		hi = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
	}
	return json_utf8(j, hi);
}

/* One raw UTF-8 sequence starting with c (RFC 3629: no overlongs,
 * no surrogates, nothing past U+10FFFF). */
static int
json_raw_utf8(struct json *j, int c)
{
	char	 b[4];
	int	 n, i, d;
	unsigned cp;

	if (c < 0xc2 || c > 0xf4) {
		json_fail(j, "invalid UTF-8");
		return -1;
	}
	n = c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
	cp = (unsigned)c & (n == 2 ? 0x1f : n == 3 ? 0x0f : 0x07);
	b[0] = (char)c;
	for (i = 1; i < n; i++) {
		d = json_getc(j);
		if (d < 0 || (d & 0xc0) != 0x80) {
			json_fail(j, "invalid UTF-8");
			return -1;
		}
		b[i] = (char)d;
		cp = cp << 6 | ((unsigned)d & 0x3f);
	}
	if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
	    (n == 4 && (cp < 0x10000 || cp > 0x10ffff))) {
		json_fail(j, "invalid UTF-8");
		return -1;
	}
	return json_put(j, b, (size_t)n);
}

/* A string; the opening quote is consumed. */
static int
json_string(struct json *j)
{
	static const char esc_in[] = "\"\\/bfnrt", esc_out[] = "\"\\/\b\f\n\r\t";
	const char *e;
	char	 ch;
	int	 c;

	j->slen = 0;
	for (;;) {
		c = json_getc(j);
		if (c < 0) {
			json_fail(j, "unterminated string");
			return -1;
		}
		if (c == '"')
			break;
		if (c < 0x20) {
			json_fail(j, "control character in string");
			return -1;
		}
		if (c == '\\') {
			c = json_getc(j);
			if (c == 'u') {
				if (json_unicode(j) == -1)
					return -1;
				continue;
			}
			if (c <= 0 || (e = strchr(esc_in, c)) == NULL) {
				json_fail(j, "bad escape");
				return -1;
			}
			ch = esc_out[e - esc_in];
			if (json_put(j, &ch, 1) == -1)
				return -1;
		} else if (c >= 0x80) {
			if (json_raw_utf8(j, c) == -1)
				return -1;
		} else {
			ch = (char)c;
			if (json_put(j, &ch, 1) == -1)
				return -1;
		}
	}
	if (!j->skip)
		j->str[j->slen] = '\0';
	return 0;
}

/* Digits into the buffer; returns how many. */
static int
json_digits(struct json *j)
{
	int	 n = 0, c;
	char	 ch;

	while ((c = json_peek(j)) >= '0' && c <= '9') {
		ch = (char)json_getc(j);
		if (json_put(j, &ch, 1) == -1)
			return -1;
		n++;
	}
	return n;
}

/* A number (RFC 8259 6), kept as text: -?(0|[1-9]d*)(.d+)?([eE][+-]?d+)? */
static int
json_number(struct json *j)
{
	char	 ch;
	int	 c, n;

	j->slen = 0;
	if (json_peek(j) == '-') {
		ch = (char)json_getc(j);
		if (json_put(j, &ch, 1) == -1)
			return -1;
	}
	if (json_peek(j) == '0') {
		ch = (char)json_getc(j);
		if (json_put(j, &ch, 1) == -1)
			return -1;
	} else if ((n = json_digits(j)) <= 0) {
		if (n == 0)
			json_fail(j, "bad number");
		return -1;
	}
	if (json_peek(j) == '.') {
		ch = (char)json_getc(j);
		if (json_put(j, &ch, 1) == -1 || (n = json_digits(j)) < 0)
			return -1;
		if (n == 0) {
			json_fail(j, "bad number");
			return -1;
		}
	}
	if ((c = json_peek(j)) == 'e' || c == 'E') {
		ch = (char)json_getc(j);
		if (json_put(j, &ch, 1) == -1)
			return -1;
		if ((c = json_peek(j)) == '+' || c == '-') {
			ch = (char)json_getc(j);
			if (json_put(j, &ch, 1) == -1)
				return -1;
		}
		if ((n = json_digits(j)) <= 0) {
			if (n == 0)
				json_fail(j, "bad number");
			return -1;
		}
	}
	if (!j->skip)
		j->str[j->slen] = '\0';
	return 0;
}

static int
json_literal(struct json *j, const char *word)
{
	for (; *word; word++)
		if (json_getc(j) != *word) {
			json_fail(j, "bad literal");
			return -1;
		}
	return 0;
}

static void
json_after_value(struct json *j)
{
	j->want = j->depth == 0 ? W_DONE : W_COMMA_OR_END;
}

static enum json_ev
json_open(struct json *j, char kind)
{
	if (j->depth >= JSON_DEPTH_MAX)
		return json_fail(j, "nesting deeper than JSON_DEPTH_MAX");
	j->stack[j->depth++] = kind;
	j->want = kind == '{' ? W_KEY_OR_END : W_VALUE_OR_END;
	return kind == '{' ? JSON_OBJ : JSON_ARR;
}

static enum json_ev
json_close(struct json *j, int c)
{
	char	 open = c == '}' ? '{' : '[';

	if (j->depth == 0 || j->stack[j->depth - 1] != open)
		return json_fail(j, "mismatched bracket");
	json_getc(j);
	j->depth--;
	json_after_value(j);
	return c == '}' ? JSON_OBJ_END : JSON_ARR_END;
}

static enum json_ev
json_value(struct json *j, int c)
{
	switch (c) {
	case '{':
	case '[':
		json_getc(j);
		return json_open(j, (char)c);
	case '"':
		json_getc(j);
		if (json_string(j) == -1)
			return JSON_ERR;
		json_after_value(j);
		return JSON_STR;
	case 't':
	case 'f':
	case 'n':
		if (json_literal(j, c == 't' ? "true" : c == 'f' ? "false" :
		    "null") == -1)
			return JSON_ERR;
		json_after_value(j);
		return c == 't' ? JSON_TRUE : c == 'f' ? JSON_FALSE : JSON_NULL;
	default:
		if (c != '-' && (c < '0' || c > '9'))
			return json_fail(j, c < 0 ? "unexpected end of input" :
			    "unexpected character");
		if (json_number(j) == -1)
			return JSON_ERR;
		json_after_value(j);
		return JSON_NUM;
	}
}

static enum json_ev
json_next(struct json *j)
{
	int	 c;

	if (j->err)
		return JSON_ERR;
	for (;;) {
		c = json_ws(j);
		if (c == -2)
			return JSON_ERR;
		switch (j->want) {
		case W_DONE:
			return c == -1 ? JSON_END :
			    json_fail(j, "data after the document");
		case W_COMMA_OR_END:
			if (c == ',') {
				json_getc(j);
				j->want = j->stack[j->depth - 1] == '{' ?
				    W_KEY : W_VALUE;
				continue;
			}
			if (c == '}' || c == ']')
				return json_close(j, c);
			return json_fail(j, c < 0 ? "unexpected end of input" :
			    "expected ',' or a closing bracket");
		case W_KEY_OR_END:
			if (c == '}')
				return json_close(j, c);
			/* FALLTHROUGH */
		case W_KEY:
			if (c != '"')
				return json_fail(j, "expected a key");
			json_getc(j);
			if (json_string(j) == -1)
				return JSON_ERR;
			if (json_ws(j) != ':')
				return json_fail(j, "expected ':'");
			json_getc(j);
			j->want = W_VALUE;
			return JSON_KEY;
		case W_VALUE_OR_END:
			if (c == ']')
				return json_close(j, c);
			/* FALLTHROUGH */
		default:
			return json_value(j, c);
		}
	}
}

/*
 * Skip the next value (after a KEY, or an array element), however deeply
 * nested, without storing its strings.
 */
static int
json_skip(struct json *j)
{
	int	 level = 0;
	enum json_ev ev;

	j->skip = 1;
	do {
		ev = json_next(j);
		if (ev == JSON_OBJ || ev == JSON_ARR)
			level++;
		else if (ev == JSON_OBJ_END || ev == JSON_ARR_END)
			level--;
		else if (ev == JSON_ERR || ev == JSON_END) {
			j->skip = 0;
			if (ev == JSON_END)
				json_fail(j, "unexpected end of input");
			return -1;
		}
	} while (level > 0);
	j->skip = 0;
	j->slen = 0;
	j->str[0] = '\0';
	return level < 0 ? -1 : 0;
}

/* A string value into a fixed field; -1 (reported in j) if not a string
 * or too long.  null is taken as "". */
static int
json_get_str(struct json *j, char *out, size_t sz)
{
	enum json_ev ev = json_next(j);

	if (ev == JSON_NULL) {
		out[0] = '\0';
		return 0;
	}
	if (ev != JSON_STR) {
		if (!j->err) {
			char what[64];
			bfmt(what, sizeof(what), "expected a string, not %s",
			    json_event_names[ev]);
			json_fail(j, what);
		}
		return -1;
	}
	if (j->slen >= sz || memchr(j->str, '\0', j->slen) != NULL) {
		json_fail(j, "string too long or holds NUL");
		return -1;
	}
	memcpy(out, j->str, j->slen + 1);
	return 0;
}

/* A 64-bit integer value; a quoted integer is accepted too (expires_in). */
static int
json_get_int(struct json *j, int64_t *out)
{
	enum json_ev ev = json_next(j);

	if ((ev != JSON_NUM && ev != JSON_STR) ||
	    parse_int(j->str, INT64_MIN + 1, INT64_MAX, out) == -1) {
		json_fail(j, "expected an integer");
		return -1;
	}
	return 0;
}

/*
 * A JSON response body: the source for json_init(), and the end of the
 * body, which gives the connection back.  body_end() reports a body that
 * did not have the expected shape (bad) as one line, unless reading it
 * failed, which the transport has reported already.  body_broke says
 * the last body failed that way: it broke off, so what it said is not
 * the service's word and a GET may be asked again (§11).
 */
struct body {
	struct conn *c;
	struct http_resp *r;
	int64_t	 got;		/* bytes so far: at most JSON_BODY_MAX */
};

static int body_broke;

static long
body_read(void *ctx, unsigned char *buf, size_t n)
{
	struct body *b = ctx;
	long	 got;

	if ((got = http_read(b->c, b->r, buf, n)) < 0)
		body_broke = 1;
	else if ((b->got += got) > JSON_BODY_MAX) {
		net_permanent = 1;	/* a body without end: not asked again */
		b->r->close = 1;
		return err1("%s: an answer longer than %d MiB", b->c->host,
		    JSON_BODY_MAX >> 20);
	}
	return got;
}

static int
body_end(struct body *b, struct json *j, int bad, const char *what)
{
	char	 host[HOST_MAX];

	bfmt(host, sizeof(host), "%s", b->c->host);
	http_done(b->c, b->r);
	if (!bad)
		return 0;
	if (j->rderr)
		return -1;
	return err1("%s: improper %s: %s", host, what,
	    j->msg[0] ? j->msg : "unexpected shape");
}

/* == 9. Profiles and configuration ======================================== */

/*
 * The configuration directory (--config, ODCP_CONFIG_DIR,
 * $XDG_CONFIG_HOME/odcp or ~/.config/odcp) holds "config", an INI file
 * with one [section] per profile, and one token file per profile.
 * Settings come from the command line, then the environment, then the
 * profile, then the defaults; main applies the first two after
 * conf_load().  Unknown keys are errors: a typo must not go unnoticed.
 */
static char *
conf_trim(char *s)
{
	char	*e;

	s += strspn(s, " \t");
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

static int
conf_set(struct profile *p, const char *key, const char *val,
    const char *file, int line)
{
	static const struct {
		const char *key;
		size_t	 off, sz;
	} strs[] = {
#define S(k, f) { k, offsetof(struct profile, f), sizeof(((struct profile *)0)->f) }
		S("client_id", client_id), S("tenant", tenant),
		S("scope", scope), S("login_url", login_url),
		S("graph_url", graph_url), S("redirect_uri", redirect_uri),
		S("cacert", cacert), S("drive", drive), S("user", user),
		S("client_secret_file", secret_file), S("proxy", proxy),
#undef S
	};
	int64_t	 v;
	size_t	 i;

	for (i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
		if (strcmp(key, strs[i].key) == 0) {
			if (scopy((char *)p + strs[i].off, strs[i].sz, val) == -1)
				return fail(EXIT_USAGE, "%s:%d: value of %s "
				    "too long", file, line, key);
			return 0;
		}
	if (strcmp(key, "timeout") == 0) {
		if (parse_int(val, 1, 3600, &v) == -1)
			return fail(EXIT_USAGE, "%s:%d: timeout must be 1 to "
			    "3600 seconds", file, line);
		p->timeout = (int)v;
		return 0;
	}
	if (strcmp(key, "retries") == 0) {
		if (parse_int(val, 0, RETRY_LIMIT, &v) == -1)
			return fail(EXIT_USAGE, "%s:%d: retries must be 0 to %d",
			    file, line, RETRY_LIMIT);
		p->retries = (int)v;
		return 0;
	}
	if (strcmp(key, "fragment_size") == 0) {
		if (parse_int(val, 1, INT64_MAX, &v) == -1 ||
		    v % FRAGMENT_UNIT != 0 || v >= FRAGMENT_LIMIT)
			return fail(EXIT_USAGE, "%s:%d: fragment_size must be "
			    "a multiple of 327680 below 62914560", file, line);
		p->fragment = v;
		return 0;
	}
	if (strcmp(key, "client_secret") == 0)
		return fail(EXIT_USAGE, "%s:%d: put the client secret in a "
		    "file named by client_secret_file, or in ODCP_CLIENT_SECRET",
		    file, line);
	return fail(EXIT_USAGE, "%s:%d: unknown setting '%s'", file, line, key);
}

static void
conf_defaults(struct profile *p)
{
	bfmt(p->client_id, sizeof(p->client_id), "%s", ODCP_CLIENT_ID);
	bfmt(p->tenant, sizeof(p->tenant), "%s", TENANT_DEFAULT);
	bfmt(p->scope, sizeof(p->scope), "%s", SCOPE_DEFAULT);
	bfmt(p->login_url, sizeof(p->login_url), "%s", LOGIN_URL);
	bfmt(p->graph_url, sizeof(p->graph_url), "%s", GRAPH_URL);
	p->timeout = TIMEOUT_DEFAULT;
	p->retries = RETRY_DEFAULT;
	p->fragment = FRAGMENT_DEFAULT;
}

/* Read p->dir/config and apply the section named p->name. */
static int
conf_load(struct profile *p)
{
	static struct profile other;	/* where other profiles' keys go */
	char	 path[LPATH_MAX + 16], line[CONF_LINE_MAX], *s, *eq, *e;
	FILE	*f;
	int	 n = 0, in = -1, seen = 0, rc = 0;

	conf_defaults(p);
	bfmt(path, sizeof(path), "%s/config", p->dir);
	if ((f = fopen_regular(path)) == NULL) {
		if (errno == EINVAL)
			return fail(EXIT_USAGE, "%s: not a regular file", path);
		if (errno != ENOENT)
			return fail(EXIT_USAGE, "%s:", path);
		if (strcmp(p->name, "default") != 0)
			return fail(EXIT_USAGE, "unknown profile '%s' (no %s)",
			    p->name, path);
		return 0;
	}
	while (rc == 0 && fgets(line, sizeof(line), f) != NULL) {
		n++;
		if (strchr(line, '\n') == NULL && !feof(f)) {
			rc = fail(EXIT_USAGE, "%s:%d: line too long", path, n);
			break;
		}
		s = conf_trim(line);
		if (*s == '\0' || *s == '#' || *s == ';')
			continue;
		if (*s == '[') {
			if ((e = strchr(s, ']')) == NULL || e[1] != '\0') {
				rc = fail(EXIT_USAGE, "%s:%d: bad section line",
				    path, n);
				break;
			}
			*e = '\0';
			in = strcmp(conf_trim(s + 1), p->name) == 0;
			seen |= in;
			continue;
		}
		if ((eq = strchr(s, '=')) == NULL) {
			rc = fail(EXIT_USAGE, "%s:%d: expected key = value",
			    path, n);
			break;
		}
		*eq = '\0';
		if (in == -1)
			rc = fail(EXIT_USAGE, "%s:%d: setting before the first "
			    "[profile] line", path, n);
		else	/* every profile is checked, only ours is kept */
			rc = conf_set(in ? p : &other, conf_trim(s),
			    conf_trim(eq + 1), path, n);
	}
	fclose(f);
	wipe(&other, sizeof(other));
	if (rc == 0 && !seen && strcmp(p->name, "default") != 0)
		return fail(EXIT_USAGE, "unknown profile '%s' in %s", p->name,
		    path);
	return rc;
}

/* The client secret, for app-only profiles: environment, then file. */
static int
conf_secret(struct profile *p)
{
	const char *env = getenv("ODCP_CLIENT_SECRET");
	FILE	*f;
	size_t	 n;

	if (env != NULL && *env != '\0')
		return scopy(p->secret, sizeof(p->secret), env) == -1 ?
		    fail(EXIT_USAGE, "ODCP_CLIENT_SECRET too long") : 0;
	if (p->secret_file[0] == '\0')
		return 0;
	if ((f = fopen_regular(p->secret_file)) == NULL)
		return fail(EXIT_USAGE, errno == EINVAL ? "client secret file "
		    "%s: not a regular file" : "client secret file %s:",
		    p->secret_file);
	if (fgets(p->secret, sizeof(p->secret), f) == NULL)
		p->secret[0] = '\0';
	fclose(f);
	n = strcspn(p->secret, "\r\n");
	p->secret[n] = '\0';
	if (n == 0)
		return fail(EXIT_USAGE, "client secret file %s is empty",
		    p->secret_file);
	return 0;
}

/* App-only (client credentials) needs a secret and a real tenant. */
static int
conf_app_only(const struct profile *p)
{
	return p->secret[0] != '\0';
}

/*
 * State files let an interrupted put or get resume in a later run: one
 * small key=value file per upload (its session URL, a credential) or
 * download (what identifies the remote version of a partial file), mode
 * 0600 in a 0700 directory: ODCP_STATE_DIR, else DIR/state when the
 * configuration directory was named (-c, ODCP_CONFIG_DIR), else
 * $XDG_STATE_HOME/odcp or ~/.local/state/odcp.  Written atomically.
 */
#define STATE_MAX	(URL_MAX + 2 * LPATH_MAX + 512)

static char state_dir[LPATH_MAX];

/* DIR/PROFILE-KIND-HASH, where key names the transfer. */
static void
state_path(const struct profile *p, char *out, size_t sz, const char *kind,
    const char *key)
{
	bfmt(out, sz, "%s/%s-%s-%016" PRIx64, state_dir, p->name, kind,
	    fnv1a(key));
}

/* Something not ours where a state file goes: said, left alone, -1. */
static int
state_alien(const char *path)
{
	warn1("%s: not a state file of this user: left alone, and this "
	    "transfer will not be resumable", path);
	return -1;
}

/*
 * Read a state file into buf: 0, 1 if there is none, -1 if it cannot be
 * used (a link, a FIFO, another user's): said, but no failure, since it
 * costs only the resume.  O_NONBLOCK: a FIFO must not hang odcp.
 */
static int
state_load(const char *path, char *buf, size_t sz)
{
	struct stat st;
	ssize_t	 n;
	int	 fd;

	buf[0] = '\0';
	if (path[0] == '\0')
		return 1;
	if ((fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK)) == -1 &&
	    errno == ENOENT)
		return 1;
	if (fd == -1 && errno != ELOOP) {	/* ELOOP: a link, below */
		warn1("%s: cannot read the state of this transfer, so it will "
		    "not be resumable:", path);
		return -1;
	}
	if (fd == -1 || fstat(fd, &st) == -1 || !S_ISREG(st.st_mode) ||
	    st.st_uid != geteuid() || (n = pread_full(fd, buf, sz - 1, 0)) < 0) {
		if (fd != -1)
			close(fd);
		buf[0] = '\0';
		return state_alien(path);
	}
	close(fd);
	buf[n] = '\0';
	return 0;
}

/* The value of key in a loaded state file, or "" if it has none. */
static void
state_get(const char *buf, const char *key, char *out, size_t sz)
{
	const char *p = buf;
	size_t	 kl = strlen(key), n;

	out[0] = '\0';
	for (; *p; p += strcspn(p, "\n"), p += *p == '\n') {
		if (strncmp(p, key, kl) != 0 || p[kl] != '=')
			continue;
		n = strcspn(p + kl + 1, "\n");
		if (n < sz) {
			memcpy(out, p + kl + 1, n);
			out[n] = '\0';
		}
		return;
	}
}

/*
 * Replace a state file with text: temporary file, fsync, rename.  A
 * failure (a full or read-only disk) is said, but is no failure of the
 * transfer: only its resume is lost.
 */
static int
state_save(const char *path, const char *text)
{
	char	 tmp[LPATH_MAX + 128];
	size_t	 n = strlen(text);
	struct stat st;
	int	 fd = -1, bad;

	if (path[0] == '\0')
		return -1;
	if (lstat(path, &st) == 0 && (!S_ISREG(st.st_mode) ||
	    st.st_uid != geteuid()))
		return state_alien(path);
	bfmt(tmp, sizeof(tmp), "%s.XXXXXX", path);
	if (mkdir_parents(state_dir) == -1 || (fd = mkstemp(tmp)) == -1)
		bad = 1;			/* mkstemp: mode 0600 */
	else {
		bad = write_all(fd, text, n) == -1 || fsync(fd) == -1;
		bad = close(fd) == -1 || bad || rename(tmp, path) == -1;
	}
	if (bad) {
		bad = errno;
		if (fd != -1)
			unlink(tmp);
		warn1("%s: cannot save the state of this transfer, so it will "
		    "not be resumable: %s", path, strerror(bad));
		return -1;
	}
	return 0;
}

/*
 * Lock fd, opened as path, for writing, without waiting.  0: locked, and
 * still the file of that name; 1: the name now holds another file (the
 * last holder removed or renamed it between our open and our lock: open
 * it again); -1: another process holds the lock.  fd is closed unless 0.
 */
static int
lock_named(int fd, const char *path)
{
	struct flock fl;
	struct stat a, b;

	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_WRLCK;
	fl.l_whence = SEEK_SET;
	if (fcntl(fd, F_SETLK, &fl) == -1) {
		close(fd);
		return -1;
	}
	if (fstat(fd, &a) == 0 && lstat(path, &b) == 0 &&
	    a.st_dev == b.st_dev && a.st_ino == b.st_ino)
		return 0;
	close(fd);
	return 1;
}

/*
 * One odcp at a time works on a transfer (two cron jobs that overlap):
 * an fcntl lock on STATE.lock, removed when the transfer ends.  Returns
 * its descriptor; -1 without one, when the state directory cannot be
 * used (nor can the state, which is said then); -2 when another odcp
 * holds it; -3 (reported) when something else is where it goes.
 */
static int
state_lock(const char *state)
{
	char	 path[LPATH_MAX + 160];
	int	 fd, tries, rc;

	if (state[0] == '\0' || mkdir_parents(state_dir) == -1)
		return -1;
	bfmt(path, sizeof(path), "%s.lock", state);
	for (tries = 0; tries < 3; tries++) {
		if ((fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK,
		    0600)) == -1) {
			/* a state directory that cannot be written has no
			 * lock, as it has no state (said when saving); but
			 * something put where the lock goes stops the put */
			if (errno == EACCES || errno == EROFS ||
			    errno == ENOSPC || errno == EDQUOT ||
			    errno == ENOTDIR || errno == ENOENT)
				return -1;
			err1("%s: cannot be the lock of this upload:", path);
			return -3;
		}
		if ((rc = lock_named(fd, path)) == 0)
			return fd;
		if (rc == -1)
			return -2;
	}
	return -1;
}

/* Give the lock up and remove its file. */
static void
state_unlock(const char *state, int fd)
{
	char	 path[LPATH_MAX + 160];

	if (fd < 0)
		return;
	bfmt(path, sizeof(path), "%s.lock", state);
	unlink(path);
	close(fd);
}

/*
 * Forget what no later run can resume: this profile's upload sessions
 * past their expiry, and partial downloads whose partial file has gone.
 * put and get call it first, so names that change every night (dated
 * backups) leave no state behind.  Best effort, silent.
 */
static void
state_prune(const struct profile *p)
{
	static char text[STATE_MAX];
	char	 path[LPATH_MAX + 128], v[LPATH_MAX + 128];
	const char *s;
	struct dirent *de;
	struct stat st;
	size_t	 n = strlen(p->name);
	int64_t	 e;
	DIR	*d;

	if ((d = opendir(state_dir)) == NULL)
		return;
	silent = 1;
	while ((de = readdir(d)) != NULL) {
		/* NAME-put-HASH or NAME-get-HASH, HASH 16 hex digits */
		s = de->d_name;
		if (strncmp(s, p->name, n) != 0 || (strncmp(s + n, "-put-", 5)
		    != 0 && strncmp(s + n, "-get-", 5) != 0) ||
		    strlen(s + n + 5) != 16 ||
		    strspn(s + n + 5, "0123456789abcdef") != 16 ||
		    snprintf(path, sizeof(path), "%s/%s", state_dir, s) >=
		    (int)sizeof(path) || state_load(path, text, sizeof(text)) != 0)
			continue;
		state_get(text, "expires", v, sizeof(v));
		if (v[0] && parse_int(v, 1, INT64_MAX, &e) == 0 &&
		    e < (int64_t)time(NULL))
			unlink(path);
		state_get(text, "part", v, sizeof(v));
		if (v[0] && lstat(v, &st) == -1 && errno == ENOENT)
			unlink(path);
		wipe(text, sizeof(text));
	}
	silent = 0;
	closedir(d);
}

/* == 10. OAuth 2.0 and the token store ==================================== */

/*
 * Sign-in on the Microsoft identity platform, v2.0 endpoints
 * (graph-api.md 1): the device authorization grant (RFC 8628, default),
 * the authorization code grant with PKCE (RFC 7636, --browser), and
 * client credentials for app-only profiles.  Refresh tokens rotate: each
 * new one is written to the token file (temp file, fsync, rename, 0600
 * in a 0700 directory) before the access token that came with it is used.
 * auth_token() hands §11 a valid access token, refreshing when it has
 * less than AUTH_SLACK seconds left.  Tokens never reach a log.
 */
#define AUTH_SLACK	300

struct oauth {			/* one token-endpoint reply; static storage */
	char	 access[TOKEN_MAX];
	char	 refresh[TOKEN_MAX];
	char	 device_code[TOKEN_MAX];
	char	 user_code[FIELD_MAX];
	char	 verification_uri[URL_MAX];
	char	 error[FIELD_MAX];
	char	 desc[MSG_MAX];
	int64_t	 expires_in;
	int64_t	 interval;
};

static struct oauth oa;

static void
token_path(const struct profile *p, char *out, size_t sz, const char *pfx)
{
	bfmt(out, sz, "%s/%s%s.token", p->dir, pfx, p->name);
}

/* Load the token file; a missing file leaves t empty. */
static int
token_load(const struct profile *p, struct token *t)
{
	char	 path[LPATH_MAX + PROFILE_MAX + 16];
	static char line[TOKEN_MAX + 32];
	FILE	*f;
	char	*v;
	size_t	 n;
	int64_t	 e;

	memset(t, 0, sizeof(*t));
	token_path(p, path, sizeof(path), "");
	if ((f = fopen_regular(path)) == NULL)
		return errno == ENOENT ? 0 : err1(errno == EINVAL ? "%s: not a "
		    "regular file" : "%s:", path);
	while (fgets(line, sizeof(line), f) != NULL) {
		n = strcspn(line, "\r\n");
		line[n] = '\0';
		if ((v = strchr(line, '=')) == NULL)
			continue;
		*v++ = '\0';
		if (strcmp(line, "access_token") == 0)
			scopy(t->access, sizeof(t->access), v);
		else if (strcmp(line, "refresh_token") == 0)
			scopy(t->refresh, sizeof(t->refresh), v);
		else if (strcmp(line, "expires") == 0 &&
		    parse_int(v, 0, INT64_MAX, &e) == 0)
			t->expires = e;
		else if (strcmp(line, "obtained") == 0 &&
		    parse_int(v, 0, INT64_MAX, &e) == 0)
			t->obtained = e;
	}
	wipe(line, sizeof(line));
	fclose(f);
	return 0;
}

/* Write the token file atomically; the old one stays if anything fails. */
static int
token_save(const struct profile *p, const struct token *t)
{
	char	 path[LPATH_MAX + PROFILE_MAX + 16];
	char	 tmp[LPATH_MAX + PROFILE_MAX + 32];
	FILE	*f;
	int	 fd, dfd, bad;

	if (mkdir_parents(p->dir) == -1)
		return err1("%s:", p->dir);
	token_path(p, path, sizeof(path), "");
	token_path(p, tmp, sizeof(tmp) - 8, ".");
	if (bcat(tmp, sizeof(tmp), ".XXXXXX", 7) == -1)
		BUG("token path");
	if ((fd = mkstemp(tmp)) == -1)		/* mode 0600 */
		return err1("%s:", tmp);
	if ((f = fdopen(fd, "w")) == NULL) {
		close(fd);
		unlink(tmp);
		return err1("%s:", tmp);
	}
	fprintf(f, "# odcp tokens for profile %s: keep secret\n", p->name);
	if (t->refresh[0])
		fprintf(f, "refresh_token=%s\n", t->refresh);
	if (t->access[0])
		fprintf(f, "access_token=%s\nexpires=%" PRId64 "\nobtained=%"
		    PRId64 "\n", t->access, t->expires, t->obtained);
	bad = fflush(f) != 0 || fsync(fd) != 0;
	if (fclose(f) != 0 || bad) {
		unlink(tmp);
		return err1("writing %s:", tmp);
	}
	if (rename(tmp, path) == -1) {
		unlink(tmp);
		return err1("rename to %s:", path);
	}
	if ((dfd = open(p->dir, O_RDONLY)) != -1) {
		fsync(dfd);
		close(dfd);
	}
	return 0;
}

/* Parse a token-endpoint (or devicecode) reply into oa. */
static int
auth_parse(struct conn *c, struct http_resp *r)
{
	static struct json j;
	struct body b = { c, r, 0 };
	enum json_ev ev = JSON_ERR;
	char	*nl;
	int	 bad = 0;

	memset(&oa, 0, sizeof(oa));
	json_init(&j, body_read, &b);
	if (json_next(&j) != JSON_OBJ)
		bad = 1;
	while (!bad && (ev = json_next(&j)) == JSON_KEY) {
		if (strcmp(j.str, "access_token") == 0)
			bad = json_get_str(&j, oa.access, sizeof(oa.access));
		else if (strcmp(j.str, "refresh_token") == 0)
			bad = json_get_str(&j, oa.refresh, sizeof(oa.refresh));
		else if (strcmp(j.str, "device_code") == 0)
			bad = json_get_str(&j, oa.device_code,
			    sizeof(oa.device_code));
		else if (strcmp(j.str, "user_code") == 0)
			bad = json_get_str(&j, oa.user_code, sizeof(oa.user_code));
		else if (strcmp(j.str, "verification_uri") == 0)
			bad = json_get_str(&j, oa.verification_uri,
			    sizeof(oa.verification_uri));
		else if (strcmp(j.str, "error") == 0)
			bad = json_get_str(&j, oa.error, sizeof(oa.error));
		else if (strcmp(j.str, "error_description") == 0) {
			j.skip = 0;
			if (json_next(&j) != JSON_STR)
				bad = 1;
			else	/* shown: the first line, at most MSG_MAX */
				strtrunc(oa.desc, sizeof(oa.desc), j.str);
		} else if (strcmp(j.str, "expires_in") == 0)
			bad = json_get_int(&j, &oa.expires_in);
		else if (strcmp(j.str, "interval") == 0)
			bad = json_get_int(&j, &oa.interval);
		else
			bad = json_skip(&j);
	}
	if (!bad && (ev != JSON_OBJ_END || json_next(&j) != JSON_END))
		bad = 1;
	wipe(j.str, sizeof(j.str));
	if (body_end(&b, &j, bad || j.err, "reply from the identity "
	    "platform") == -1) {
		wipe(&oa, sizeof(oa));
		return -1;
	}
	if ((nl = strpbrk(oa.desc, "\r\n")) != NULL)
		*nl = '\0';
	tidy(oa.desc);
	tidy(oa.error);
	return 0;
}

/*
 * POST a form to {login_url}/{tenant}/oauth2/v2.0/{endpoint}.  Fills oa;
 * returns the HTTP status, or -1 (reported) on a transport failure.
 */
static int
auth_post(const struct profile *p, const char *endpoint, const char *form)
{
	char	 url[URL_MAX], what[64];
	struct http_req q;
	struct http_resp r;
	struct conn *c;
	int	 rc, attempt;
	int64_t	 wait;

	if (form[0] == '\0')
		return -1;	/* auth_form() failed and said so */
	if (snprintf(url, sizeof(url), "%s/%s/oauth2/v2.0/%s", p->login_url,
	    p->tenant, endpoint) >= (int)sizeof(url))
		return fail(EXIT_USAGE, "login_url too long");
	memset(&q, 0, sizeof(q));
	q.method = "POST";
	q.hdrs = "Content-Type: application/x-www-form-urlencoded\r\n"
	    "Accept: application/json\r\n";
	q.body = form;
	q.blen = strlen(form);
	q.has_body = 1;
	q.fd = -1;
	for (attempt = 0;; attempt++) {
		hush = 1;
		held[0] = '\0';
		r.status = 0;
		body_broke = 0;
		rc = http_exchange(url, &q, &r, &c, p->timeout, 0);
		if (rc == 0)
			rc = auth_parse(c, &r);
		hush = 0;
		/* an answer that broke off is asked for again, as a lost one */
		if (rc == -1 && (net_permanent || (r.status != 0 &&
		    r.status != 429 && r.status < 500 && !body_broke)))
			return release();
		/* RFC 6749 5.2 and graph-api.md 1.5: retry later */
		if (rc == 0 && r.status != 429 && r.status < 500 &&
		    strcmp(oa.error, "temporarily_unavailable") != 0 &&
		    strcmp(oa.error, "server_error") != 0)
			return r.status;
		if (attempt >= retries || (wait = retry_wait(r.status ? &r :
		    NULL, attempt)) < 0) {
			if (rc == 0)
				return r.status;
			bfmt(what, sizeof(what), "%s request", endpoint);
			return release_after(what, attempt + 1);
		}
		if (rc == 0)
			bfmt(held, sizeof(held), "identity platform: HTTP %d %s",
			    r.status, oa.error);
		retry_nap(wait, held);
	}
}

/*
 * Build "k=v&k=v" with each value form-encoded; a NULL key ends the list.
 * A form that does not fit is reported and left empty, and auth_post()
 * does not send an empty form.
 */
static int
auth_form(char *out, size_t sz, ...)
{
	static char enc[TOKEN_MAX * 3];
	const char *k, *v;
	va_list	 ap;
	int	 rc = 0;

	out[0] = '\0';
	va_start(ap, sz);
	while (rc == 0 && (k = va_arg(ap, const char *)) != NULL) {
		v = va_arg(ap, const char *);
		if (form_encode(enc, sizeof(enc), v) == -1 ||
		    (out[0] && bcat(out, sz, "&", 1) == -1) ||
		    bcat(out, sz, k, strlen(k)) == -1 ||
		    bcat(out, sz, "=", 1) == -1 ||
		    bcat(out, sz, enc, strlen(enc)) == -1)
			rc = -1;
	}
	va_end(ap);
	wipe(enc, sizeof(enc));
	if (rc == -1) {		/* a value from the service can be this long */
		wipe(out, sz);
		return err1("sign-in request too long");
	}
	return 0;
}

/* Store a successful token reply; the refresh token may be absent. */
static int
token_ok(const char *s)
{
	for (; *s; s++)
		if (*s < 0x21 || *s > 0x7e)
			return 0;
	return 1;
}

static int
auth_store(const struct profile *p, struct token *t)
{
	if (oa.access[0] == '\0')
		return err1("identity platform answered without an access token");
	/* tokens go into a header and a key=value file: visible ASCII only
	 * (RFC 6750 2.1 b64token, RFC 6749 A.12, A.17) */
	if (!token_ok(oa.access) || (oa.refresh[0] && !token_ok(oa.refresh))) {
		wipe(&oa, sizeof(oa));
		return err1("identity platform sent an unusable token; "
		    "the stored tokens are unchanged");
	}
	if (oa.expires_in <= 0 || oa.expires_in > 86400 * 365)
		oa.expires_in = 3600;
	scopy(t->access, sizeof(t->access), oa.access);
	if (oa.refresh[0])
		scopy(t->refresh, sizeof(t->refresh), oa.refresh);
	t->obtained = (int64_t)time(NULL);
	t->expires = t->obtained + oa.expires_in;
	wipe(&oa, sizeof(oa));
	return token_save(p, t);
}

/*
 * A token-endpoint error: what it means for the user, one line.  The
 * AADSTS number only picks the hint; the decision follows "error"
 * (graph-api.md 1.5: Microsoft says not to branch on the numbers).
 */
static int
auth_error(const struct profile *p, int status)
{
	const char *e = oa.error, *a = strstr(oa.desc, "AADSTS");
	const char *hint = "";
	char	 code[24] = "", login[PROFILE_MAX + 32];
	int	 st = EXIT_FAIL;
	size_t	 n;

	if (a != NULL && (n = strspn(a + 6, "0123456789")) > 0)
		bfmt(code, sizeof(code), " %.*s", (int)(6 + (n < 12 ? n : 12)),
		    a);
	/* a hint follows the description: without its full stop */
	if ((n = strlen(oa.desc)) > 0 && oa.desc[n - 1] == '.')
		oa.desc[n - 1] = '\0';
	bfmt(login, sizeof(login), "; sign in again: odcp %s%s%slogin",
	    strcmp(p->name, "default") ? "-p " : "",
	    strcmp(p->name, "default") ? p->name : "",
	    strcmp(p->name, "default") ? " " : "");
	if (strcmp(e, "invalid_grant") == 0 ||
	    strcmp(e, "interaction_required") == 0 ||
	    strcmp(e, "consent_required") == 0) {
		st = EXIT_AUTH;
		hint = login;
	} else if (strcmp(e, "invalid_client") == 0 ||
	    strcmp(e, "unauthorized_client") == 0 ||
	    strcmp(e, "invalid_scope") == 0) {
		st = EXIT_USAGE;
		if (strstr(code, "7000218"))
			hint = "; on the app registration, under Authentication, "
			    "set \"Allow public client flows\" to Yes";
		else if (strstr(code, "700016"))
			hint = "; the client id is not an app registered in this "
			    "tenant: check client_id and tenant";
		else if (strstr(code, "7000215") || strstr(code, "7000222"))
			hint = "; the client secret is wrong or has expired: "
			    "make a new one under Certificates & secrets";
		else if (strcmp(e, "invalid_scope") == 0)
			hint = "; check the scope setting and the API "
			    "permissions of the app registration";
		else
			hint = "; check the app registration: client id, "
			    "\"Allow public client flows\", client secret";
	} else if (status == 429 || status >= 500 ||
	    strcmp(e, "temporarily_unavailable") == 0)
		hint = "; the identity platform is busy: try again later";
	/* "AADSTS70008: ..." names its code itself */
	fail(st, "sign-in failed for profile %s: HTTP %d %s%s: %s%s", p->name,
	    status, e[0] ? e : "(no error code)", a == oa.desc ? "" : code,
	    oa.desc, hint);
	wipe(&oa, sizeof(oa));
	return -1;
}

static int
auth_need_client(const struct profile *p)
{
	if (p->client_id[0] == '\0')
		return fail(EXIT_USAGE, "no client id: set client_id in the "
		    "profile, ODCP_CLIENT_ID or --client-id (see odcp(1), "
		    "REGISTERING AN APP)");
	return 0;
}

/* The Graph resource for ".default": scheme and host of graph_url. */
static void
auth_resource(const struct profile *p, char *out, size_t sz)
{
	const char *s = strstr(p->graph_url, "://");
	size_t	 n = s ? strcspn(s + 3, "/") + (size_t)(s + 3 - p->graph_url) :
	    strlen(p->graph_url);

	bfmt(out, sz, "%.*s/.default", (int)n, p->graph_url);
}

static int
auth_client_credentials(const struct profile *p, struct token *t)
{
	static char form[TOKEN_MAX * 4];
	char	 scope[URL_MAX];
	int	 st;

	if (strcasecmp(p->tenant, "common") == 0 ||
	    strcasecmp(p->tenant, "organizations") == 0 ||
	    strcasecmp(p->tenant, "consumers") == 0)
		return fail(EXIT_USAGE, "app-only sign-in needs a tenant id "
		    "or domain, not '%s'", p->tenant);
	auth_resource(p, scope, sizeof(scope));
	auth_form(form, sizeof(form), "client_id", p->client_id,
	    "client_secret", p->secret, "scope", scope,
	    "grant_type", "client_credentials", (char *)NULL);
	st = auth_post(p, "token", form);
	wipe(form, sizeof(form));
	if (st == -1)
		return -1;
	if (st != 200)
		return auth_error(p, st);
	t->refresh[0] = '\0';
	return auth_store(p, t);
}

static int
auth_refresh(const struct profile *p, struct token *t)
{
	static char form[TOKEN_MAX * 4];
	int	 st;

	if (conf_app_only(p))
		return auth_client_credentials(p, t);
	if (t->refresh[0] == '\0')
		return fail(EXIT_AUTH, "not signed in (profile %s): run "
		    "odcp %s%s%slogin", p->name, strcmp(p->name, "default") ?
		    "-p " : "", strcmp(p->name, "default") ? p->name : "",
		    strcmp(p->name, "default") ? " " : "");
	if (auth_need_client(p) == -1)
		return -1;
	auth_form(form, sizeof(form), "client_id", p->client_id,
	    "grant_type", "refresh_token", "refresh_token", t->refresh,
	    "scope", p->scope, (char *)NULL);
	st = auth_post(p, "token", form);
	wipe(form, sizeof(form));
	if (st == -1)
		return -1;
	if (st != 200)
		return auth_error(p, st);
	debug(1, "access token refreshed");
	return auth_store(p, t);
}

/*
 * Refreshes are serialised between processes (two cron jobs sharing a
 * profile) by an fcntl lock on DIR/.NAME.lock.  Under the lock the token
 * file is read again: if another odcp has renewed the token meanwhile,
 * that token is used and no refresh is made, so neither process throws
 * away the other's rotated refresh token.
 */
static int
token_lock(const struct profile *p)
{
	static const struct timespec tenth = { 0, 100000000 };
	char	 path[LPATH_MAX + PROFILE_MAX + 16];
	struct flock fl;
	int64_t	 limit, waited;
	int	 fd;

	if (mkdir_parents(p->dir) == -1)
		return err1("%s:", p->dir);
	bfmt(path, sizeof(path), "%s/.%s.lock", p->dir, p->name);
	if ((fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK,
	    0600)) == -1)
		return err1("%s:", path);
	/* the holder's own refresh is bounded by its timeouts and retries:
	 * wait as long, saying so, and no longer (a stopped process) */
	limit = (int64_t)p->timeout * (retries + 2);
	for (waited = 0;; waited++) {
		memset(&fl, 0, sizeof(fl));
		fl.l_type = F_WRLCK;
		fl.l_whence = SEEK_SET;
		if (fcntl(fd, F_SETLK, &fl) == 0)
			return fd;
		if (errno != EACCES && errno != EAGAIN && errno != EINTR) {
			close(fd);
			return err1("lock %s:", path);
		}
		if (fcntl(fd, F_GETLK, &fl) == -1 || fl.l_type == F_UNLCK)
			fl.l_pid = 0;
		if (waited == 20 && !quiet)	/* 2 s */
			fprintf(stderr, "odcp: waiting for another odcp (pid %ld) "
			    "renewing the tokens of profile %s\n",
			    (long)fl.l_pid, p->name);
		if (waited >= limit * 10) {
			close(fd);
			return err1("%s: another odcp (pid %ld) has held it for "
			    "%" PRId64 " s: given up", path, (long)fl.l_pid,
			    limit);
		}
		nanosleep(&tenth, NULL);
	}
}

/* Does t hold an access token with more than the slack left? */
static int
token_fresh(const struct token *t)
{
	int64_t	 slack = AUTH_SLACK;

	if (t->obtained > 0 && t->expires > t->obtained &&
	    (t->expires - t->obtained) / 2 < slack)
		slack = (t->expires - t->obtained) / 2;
	return t->access[0] && t->expires > (int64_t)time(NULL) + slack;
}

/*
 * A usable access token in t->access; force: the last one was refused.
 * A token is renewed AUTH_SLACK seconds before it expires, or halfway
 * through its life if that is shorter.
 */
static int
auth_token(const struct profile *p, struct token *t, int force)
{
	static struct token disk;
	int	 lk, rc;

	if (!force && token_fresh(t))
		return 0;
	if ((lk = token_lock(p)) == -1)
		return -1;
	rc = token_load(p, &disk);
	if (rc == 0 && strcmp(disk.access, t->access) != 0 &&
	    token_fresh(&disk)) {
		debug(1, "using the token another odcp has just renewed");
		*t = disk;
	} else if (rc == 0) {
		if (disk.refresh[0])	/* the newest one */
			scopy(t->refresh, sizeof(t->refresh), disk.refresh);
		rc = auth_refresh(p, t);
	}
	wipe(&disk, sizeof(disk));
	close(lk);
	return rc;
}

/* RFC 8628: show the code, then poll until approved, refused or expired. */
static int
auth_device(const struct profile *p, struct token *t)
{
	static char form[TOKEN_MAX * 2];
	static char device_code[TOKEN_MAX];
	int64_t	 interval, deadline;
	int	 st;

	auth_form(form, sizeof(form), "client_id", p->client_id, "scope",
	    p->scope, (char *)NULL);
	if ((st = auth_post(p, "devicecode", form)) == -1)
		return -1;
	if (st != 200)
		return auth_error(p, st);
	if (oa.device_code[0] == '\0' || oa.user_code[0] == '\0' ||
	    oa.verification_uri[0] == '\0' || has_control(oa.user_code) ||
	    has_control(oa.verification_uri))
		return err1("device code reply without a usable code or URL");
	scopy(device_code, sizeof(device_code), oa.device_code);
	interval = oa.interval > 0 && oa.interval < 60 ? oa.interval : 5;
	deadline = (int64_t)time(NULL) + (oa.expires_in > 0 &&
	    oa.expires_in < 86400 ? oa.expires_in : 900);
	fprintf(stderr, "To sign in, open %s and enter the code %s\n",
	    oa.verification_uri, oa.user_code);
	fflush(stderr);
	for (;;) {
		sleep((unsigned)interval);
		if ((int64_t)time(NULL) >= deadline) {
			wipe(device_code, sizeof(device_code));
			return fail(EXIT_AUTH, "the code expired before sign-in "
			    "finished; run odcp login again");
		}
		auth_form(form, sizeof(form), "grant_type",
		    "urn:ietf:params:oauth:grant-type:device_code",
		    "client_id", p->client_id, "device_code", device_code,
		    (char *)NULL);
		if ((st = auth_post(p, "token", form)) == -1)
			break;
		if (st == 200) {
			wipe(device_code, sizeof(device_code));
			wipe(form, sizeof(form));
			return auth_store(p, t);
		}
		if (strcmp(oa.error, "authorization_pending") == 0)
			continue;
		if (strcmp(oa.error, "slow_down") == 0) {
			interval += 5;		/* RFC 8628 3.5 */
			continue;
		}
		if (strcmp(oa.error, "authorization_declined") == 0 ||
		    strcmp(oa.error, "access_denied") == 0)
			st = fail(EXIT_AUTH, "sign-in was declined");
		else if (strcmp(oa.error, "expired_token") == 0)
			st = fail(EXIT_AUTH, "the code expired before sign-in "
			    "finished; run odcp login again");
		else if (strcmp(oa.error, "bad_verification_code") == 0)
			st = fail(EXIT_AUTH, "the identity platform did not "
			    "recognise the device code: %s", oa.desc);
		else
			st = auth_error(p, st);
		break;
	}
	wipe(device_code, sizeof(device_code));
	wipe(form, sizeof(form));
	wipe(&oa, sizeof(oa));
	return -1;
}

/*
 * The decoded value of name in a query string, in a static buffer that
 * the next call reuses (and auth_pasted wipes); NULL if absent.
 */
static char auth_qbuf[URL_MAX];

static char *
auth_query(const char *q, const char *name)
{
	char	*pair, *save = NULL, *eq, *copy = auth_qbuf;
	size_t	 n = strlen(name);

	if (scopy(copy, sizeof(auth_qbuf), q) == -1)
		return NULL;
	for (pair = strtok_r(copy, "&", &save); pair != NULL;
	    pair = strtok_r(NULL, "&", &save)) {
		eq = strchr(pair, '=');
		if (eq == NULL || (size_t)(eq - pair) != n ||
		    strncmp(pair, name, n) != 0)
			continue;
		if (pct_decode(eq + 1, 1) == -1)
			return NULL;
		return eq + 1;
	}
	return NULL;
}

/*
 * The code in what the person pasted: the whole address the browser
 * landed on, whose query (or fragment) must carry this sign-in's state,
 * or the bare code.
 */
static int
auth_pasted(char *line, const char *state, char *code, size_t sz)
{
	char	 err[FIELD_MAX], *q, *v;
	size_t	 n;
	int	 rc = 0;

	line[strcspn(line, "\r\n")] = '\0';
	q = line + strspn(line, " \t");
	if (strpbrk(q, "?#=") != NULL) {
		if ((v = strpbrk(q, "?#")) != NULL)
			q = v + 1;
		if ((v = auth_query(q, "error")) != NULL) {
			strtrunc(err, sizeof(err), v);
			v = auth_query(q, "error_description");
			return fail(EXIT_AUTH, "sign-in failed: %s: %.300s", err,
			    v ? v : "");
		}
		if ((v = auth_query(q, "state")) == NULL || strcmp(v, state))
			return fail(EXIT_AUTH, "the pasted address does not "
			    "carry this sign-in's state; start again");
		if ((q = auth_query(q, "code")) == NULL)
			return fail(EXIT_AUTH, "no code in the pasted address");
	}
	if ((n = strlen(q)) == 0 || n >= sz)
		rc = fail(EXIT_AUTH, "no code given");
	else
		memcpy(code, q, n + 1);
	wipe(auth_qbuf, sizeof(auth_qbuf));
	return rc;
}

/* Authorization code with PKCE (RFC 7636, S256) and a pasted redirect. */
static int
auth_browser(const struct profile *p, struct token *t)
{
	static char form[TOKEN_MAX * 4], line[URL_MAX], code[TOKEN_MAX];
	char	 url[URL_MAX * 2], redirect[URL_MAX], enc_redirect[URL_MAX * 3];
	char	 enc_scope[FIELD_MAX * 3], enc_client[FIELD_MAX * 3];
	char	 verifier[64], challenge[64], state[32];
	unsigned char rnd[32], hash[32];
	br_sha256_context sh;
	int	 st;

	if (p->redirect_uri[0])
		bfmt(redirect, sizeof(redirect), "%s", p->redirect_uri);
	else
		bfmt(redirect, sizeof(redirect),
		    "%s/common/oauth2/nativeclient", p->login_url);
	if (random_bytes(rnd, sizeof(rnd)) == -1)
		return -1;
	base64(verifier, rnd, 32, 1);		/* 43 characters */
	br_sha256_init(&sh);
	br_sha256_update(&sh, verifier, strlen(verifier));
	br_sha256_out(&sh, hash);
	base64(challenge, hash, 32, 1);
	if (random_bytes(rnd, 16) == -1)
		return -1;
	base64(state, rnd, 16, 1);
	if (form_encode(enc_redirect, sizeof(enc_redirect), redirect) == -1 ||
	    form_encode(enc_scope, sizeof(enc_scope), p->scope) == -1 ||
	    form_encode(enc_client, sizeof(enc_client), p->client_id) == -1)
		return fail(EXIT_USAGE, "redirect_uri, scope or client id too "
		    "long");
	bfmt(url, sizeof(url), "%s/%s/oauth2/v2.0/authorize?client_id=%s"
	    "&response_type=code&redirect_uri=%s&response_mode=query"
	    "&scope=%s&state=%s&code_challenge=%s&code_challenge_method=S256",
	    p->login_url, p->tenant, enc_client, enc_redirect, enc_scope,
	    state, challenge);
	fprintf(stderr, "Open this address in a browser and sign in:\n\n%s\n\n"
	    "Then paste the address of the page you land on (or the code):\n",
	    url);
	fflush(stderr);
	if (fgets(line, sizeof(line), stdin) == NULL)
		return fail(EXIT_AUTH, "no redirect address given");
	st = auth_pasted(line, state, code, sizeof(code));
	wipe(line, sizeof(line));
	if (st == -1)
		return -1;
	auth_form(form, sizeof(form), "client_id", p->client_id,
	    "grant_type", "authorization_code", "code", code,
	    "redirect_uri", redirect, "code_verifier", verifier,
	    "scope", p->scope, (char *)NULL);
	wipe(code, sizeof(code));
	st = auth_post(p, "token", form);
	wipe(form, sizeof(form));
	if (st == -1)
		return -1;
	if (st != 200)
		return auth_error(p, st);
	return auth_store(p, t);
}

/* == 11. Microsoft Graph (policy) ========================================= */

/*
 * graph_request() is the one place that decides what a request carries
 * and what happens when it fails: the bearer token goes only to Graph
 * (never to pre-authenticated download and upload hosts, graph-api.md
 * 5.1, 7.2); a 401 from Graph refreshes the token once and replays;
 * 429 and 503 wait for Retry-After; idempotent requests are retried on
 * 5xx and broken connections with backoff (9.2, 9.3), within the
 * --retries budget.  Reports of failures that will be retried are held
 * back (hush), and only the last one is shown when the budget is spent.
 * Requests that must not be repeated blindly, and upload fragments,
 * whose next offset only the service knows, leave the retry to their
 * caller (G_HOLD).  Error bodies are decoded into one line ("HTTP 404
 * itemNotFound: ...") by graph_error().  The parse_* functions read one
 * response shape each, streaming.
 */
enum {
	G_AUTH = 1,		/* send the bearer token (Graph only) */
	G_IDEMPOTENT = 2,	/* may be repeated after any failure */
	G_SECRET = 4,		/* the URL is a credential: never logged */
	G_HOLD = 8,		/* the caller retries: hold failures for it */
	G_FRESH = 16,		/* the item was just written: 404 may pass */
	G_MISSING_OK = 32,	/* graph_stat(): a 404 is an answer */
	G_SLOW = 64		/* the service may think long: a longer timeout */
};

struct graph {
	struct profile *p;
	struct token *t;
	char	 base[URL_MAX];		/* the drive: {graph_url}/me/drive */
	int	 lost;			/* the last request may have been
					 * processed, its answer was lost */
	int	 resent;		/* the last request was sent again
					 * after an answer was lost */
	char	 made[FRESH_RECENT][PATH_MAX_];	/* folders just created */
	int	 nmade;
	const char *what;		/* the drive path being worked on */
};

static int
graph_init(struct graph *g, struct profile *p, struct token *t)
{
	char	 enc[FIELD_MAX * 3];

	g->p = p;
	g->t = t;
	if (p->drive[0]) {
		if (path_encode(enc, sizeof(enc), p->drive) == -1)
			BUG("drive id");
		bfmt(g->base, sizeof(g->base), "%s/drives/%s", p->graph_url, enc);
	} else if (p->user[0]) {
		if (path_encode(enc, sizeof(enc), p->user) == -1)
			BUG("user name");
		bfmt(g->base, sizeof(g->base), "%s/users/%s/drive",
		    p->graph_url, enc);
	} else if (conf_app_only(p))
		return fail(EXIT_USAGE, "profile %s signs in app-only: set "
		    "drive = <drive-id> or user = <upn> (there is no /me)",
		    p->name);
	else
		bfmt(g->base, sizeof(g->base), "%s/me/drive", p->graph_url);
	return 0;
}

static int
graph_retryable(int status, int flags)
{
	if (flags & G_HOLD)		/* the caller reads back and decides */
		return 0;
	if (status == 429 || status == 503)	/* not processed: always */
		return 1;
	return (flags & G_IDEMPOTENT) && (status == 500 ||
	    status == 502 || status == 504 || status == 509);
}

/*
 * Report the held failure of q: the drive path worked on, what went
 * wrong, and which request it was and how often it was tried.
 */
static int
graph_gave_up(struct graph *g, const struct http_req *q, const char *url,
    int flags, int attempts)
{
	char	 shown[256], msg[sizeof(held)];
	struct url u;
	int	 ok, was = silent;

	if (held[0] == '\0')
		return -1;
	bfmt(msg, sizeof(msg), "%s", held);
	silent = 1;		/* an unusable URL was reported already */
	ok = url_parse(url, &u) == 0;
	silent = was;
	if (g->what != NULL && ok)
		snprintf(held, sizeof(held), "%.300s: %.900s (%.16s to %s, %d "
		    "attempt%s)", g->what, msg, q->method, u.host, attempts,
		    attempts > 1 ? "s" : "");
	else {
		log_url(shown, sizeof(shown), url, !(flags & G_SECRET));
		snprintf(held, sizeof(held), "%.16s %s: %.1000s%s", q->method,
		    shown, msg, attempts > 1 ? " (gave up after retries)" : "");
	}
	return release();
}

/*
 * Parse a JSON answer to a GET under hush (caller: hush = 1, body_broke
 * = 0, parse, hush = 0).  When it failed because the body broke off, and
 * the budget allows, wait and return 1: ask again.  Otherwise report
 * what was held and return 0.
 */
static int
graph_again(int *attempt)
{
	if (!body_broke || *attempt >= retries) {
		release();
		return 0;
	}
	retry_nap(retry_wait(NULL, (*attempt)++), held);
	held[0] = '\0';
	return 1;
}

/*
 * Send q to url under the policy in flags; on return r holds a final
 * response head (any status) and *cp the connection with its body.
 * A transport failure of a request that is not idempotent, or under
 * G_HOLD, is not repeated here: g->lost says the service may have acted
 * on it, and with G_HOLD the report is held for the caller (release()).
 */
static int
graph_request(struct graph *g, const char *url, struct http_req *q,
    struct http_resp *r, struct conn **cp, int flags)
{
	static char hdrs[TOKEN_MAX + 1024];
	const char *extra = q->hdrs;
	int	 attempt = 0, refreshed = 0, fresh = 0, rc;
	int64_t	 wait;

	g->lost = g->resent = 0;
	for (;;) {
		q->hdrs = extra;
		/* under G_HOLD the caller decides what a failure means */
		q->once = !(flags & G_IDEMPOTENT) || (flags & G_HOLD);
		if (flags & G_AUTH) {
			if (auth_token(g->p, g->t, refreshed == 1) == -1)
				return -1;
			if (refreshed == 1)
				refreshed = 2;
			if (snprintf(hdrs, sizeof(hdrs), "Authorization: Bearer "
			    "%s\r\n%s", g->t->access, extra ? extra : "") >=
			    (int)sizeof(hdrs))
				return err1("access token too long");
			q->hdrs = hdrs;
		}
		hush = 1;
		held[0] = '\0';
		rc = http_exchange(url, q, r, cp, g->p->timeout *
		    (flags & G_SLOW ? COMMIT_SLOW : 1), flags & G_SECRET);
		hush = 0;
		g->resent |= q->resent;
		wipe(hdrs, sizeof(hdrs));
		q->hdrs = extra;
		if (rc == -1) {
			if (net_permanent)
				return graph_gave_up(g, q, url, flags, attempt + 1);
			if (flags & G_HOLD) {
				g->lost = 1;
				return -1;
			}
			g->lost = !(flags & G_IDEMPOTENT);
			if (g->lost || attempt >= retries)
				return graph_gave_up(g, q, url, flags,
				    attempt + 1);
			retry_nap(retry_wait(NULL, attempt++), held);
			g->resent = 1;
			continue;
		}
		if (r->status == 401 && (flags & G_AUTH) && refreshed == 0) {
			http_drop(*cp, r);
			refreshed = 1;
			continue;
		}
		if (r->status == 404 && (flags & G_FRESH) &&
		    fresh < FRESH_RETRIES) {
			/* the service may not show what odcp just wrote */
			http_drop(*cp, r);
			retry_nap(1 << fresh++, "just written, not yet found");
			continue;
		}
		if (graph_retryable(r->status, flags) && attempt < retries &&
		    (wait = retry_wait(r, attempt)) >= 0) {
			char	 why[HOST_MAX + 64];

			bfmt(why, sizeof(why), "HTTP %d from %s", r->status,
			    (*cp)->host);
			http_drop(*cp, r);
			retry_nap(wait, why);
			attempt++;
			continue;
		}
		return 0;
	}
}

/*
 * Report a failed response as one line and return -1: "what: HTTP 404
 * itemNotFound: The resource could not be found."  The exit status
 * follows the status and Graph's error code.  Consumes the body.
 */
static int
graph_error(struct conn *c, struct http_resp *r, const char *what)
{
	static struct json j;
	struct body b = { c, r, 0 };
	char	 code[FIELD_MAX] = "", inner[FIELD_MAX] = "", msg[MSG_MAX] = "";
	int	 depth = 0, st = EXIT_FAIL, in_err = 0, in_inner = 0;
	int	 was = hush;
	enum json_ev ev;

	/* the error body is only detail: if it breaks, the status line
	 * below is still the one report */
	hush = 1;
	json_init(&j, body_read, &b);
	/* {"error":{"code":..,"message":..,"innerError":{"code":..}}} */
	while ((ev = json_next(&j)) != JSON_END && ev != JSON_ERR) {
		if (ev == JSON_OBJ || ev == JSON_ARR)
			depth++;
		else if (ev == JSON_OBJ_END || ev == JSON_ARR_END) {
			if (depth == 2)
				in_err = 0;
			if (depth == 3)
				in_inner = 0;
			depth--;
		} else if (ev == JSON_KEY && depth == 1)
			in_err = strcmp(j.str, "error") == 0;
		else if (ev == JSON_KEY && depth == 2 && in_err) {
			if (strcmp(j.str, "code") == 0)
				json_get_str(&j, code, sizeof(code));
			else if (strcmp(j.str, "message") == 0) {
				if (json_next(&j) == JSON_STR)
					strtrunc(msg, sizeof(msg), j.str);
			} else if (strcasecmp(j.str, "innerError") == 0)
				in_inner = 1;
			else
				json_skip(&j);
		} else if (ev == JSON_KEY && depth == 3 && in_inner &&
		    strcmp(j.str, "code") == 0)
			json_get_str(&j, inner, sizeof(inner));
		else if (ev == JSON_KEY && depth >= 2)
			json_skip(&j);
	}
	http_drop(c, r);
	hush = was;
	held[0] = '\0';
	msg[strcspn(msg, "\r\n")] = '\0';
	tidy(msg);
	tidy(code);
	tidy(inner);
	if (r->status == 401)
		st = EXIT_AUTH;
	else if (r->status == 404)
		st = EXIT_NOTFOUND;
	else if (r->status == 409 && strcmp(code, "nameAlreadyExists") == 0)
		/* or a session already open for the file (7.3 [OBS]) */
		st = strstr(msg, "upload session") == NULL ? EXIT_EXISTS :
		    EXIT_FAIL;
	tidy(r->retry_after);
	if (strcmp(inner, code) == 0)		/* "a/a" says it once */
		inner[0] = '\0';
	return fail(st, "%s: HTTP %d%s%s%s%s%s%s%s%s%s%s", what, r->status,
	    code[0] ? " " : "", code, inner[0] ? "/" : "", inner,
	    msg[0] ? ": " : "", msg, r->retry_after[0] ? " (Retry-After: " :
	    "", r->retry_after, r->retry_after[0] ? ")" : "",
	    r->status == 401 ? "; the token was refused after a refresh: "
	    "sign in again with odcp login" : r->status == 409 &&
	    st == EXIT_FAIL ? "; the service ends such a session by itself "
	    "within about 15 minutes: run the same put again then" : "");
}

/*
 * An item odcp can act on safely.  Its name becomes a local file name in
 * get -r and a line in ls: "", ".", "..", a '/' or a control character
 * would lead outside the target or forge output, and no real item has
 * them (graph-api.md 3.4).  The other fields go into queue records.
 */
static int
item_check(const struct item *it)
{
	const char *f[] = { it->id, it->name, it->etag, it->ctag,
	    it->created, it->modified, it->qxh, it->mime };
	size_t	 i;

	for (i = 0; i < sizeof(f) / sizeof(f[0]); i++)
		if (has_control(f[i]))
			return -1;
	if (it->root)
		return 0;
	if (it->name[0] == '\0' || strcmp(it->name, ".") == 0 ||
	    strcmp(it->name, "..") == 0 || strchr(it->name, '/') != NULL)
		return -1;
	return 0;
}

/* The hashes facet: only quickXorHash is used (graph-api.md 10.3). */
static int
parse_hashes(struct json *j, struct item *it)
{
	enum json_ev ev;
	int	 bad = 0;

	if (json_next(j) != JSON_OBJ)
		return -1;
	while (!bad && (ev = json_next(j)) == JSON_KEY)
		bad = strcmp(j->str, "quickXorHash") == 0 ?
		    json_get_str(j, it->qxh, sizeof(it->qxh)) : json_skip(j);
	return bad || ev != JSON_OBJ_END ? -1 : 0;
}

/* The file, folder and fileSystemInfo facets. */
static int
parse_facet(struct json *j, struct item *it, const char *facet, char *fsmod)
{
	enum json_ev ev;
	int	 bad = 0, fsi = strcmp(facet, "fileSystemInfo") == 0;

	if (json_next(j) != JSON_OBJ)
		return -1;
	while (!bad && (ev = json_next(j)) == JSON_KEY) {
		if (strcmp(j->str, "childCount") == 0)
			bad = json_get_int(j, &it->children);
		else if (strcmp(j->str, "mimeType") == 0)
			bad = json_get_str(j, it->mime, sizeof(it->mime));
		else if (fsi && strcmp(j->str, "lastModifiedDateTime") == 0)
			bad = json_get_str(j, fsmod, FIELD_MAX);
		else if (strcmp(j->str, "hashes") == 0)
			bad = parse_hashes(j, it);
		else
			bad = json_skip(j);
	}
	return bad || ev != JSON_OBJ_END ? -1 : 0;
}

/* Read a driveItem object's fields; the opening brace is consumed. */
static int
parse_item_body(struct json *j, struct item *it)
{
	char	 fsmod[FIELD_MAX] = "", key[64];
	enum json_ev ev;
	int	 bad = 0;

	memset(it, 0, sizeof(*it));
	it->children = -1;
	while (!bad && (ev = json_next(j)) == JSON_KEY) {
		strtrunc(key, sizeof(key), j->str);
		if (strcmp(key, "id") == 0)
			bad = json_get_str(j, it->id, sizeof(it->id));
		else if (strcmp(key, "name") == 0)
			bad = json_get_str(j, it->name, sizeof(it->name));
		else if (strcmp(key, "size") == 0)
			bad = json_get_int(j, &it->size);
		else if (strcmp(key, "eTag") == 0)
			bad = json_get_str(j, it->etag, sizeof(it->etag));
		else if (strcmp(key, "cTag") == 0)
			bad = json_get_str(j, it->ctag, sizeof(it->ctag));
		else if (strcmp(key, "createdDateTime") == 0)
			bad = json_get_str(j, it->created, sizeof(it->created));
		else if (strcmp(key, "lastModifiedDateTime") == 0)
			bad = json_get_str(j, it->modified, sizeof(it->modified));
		else if (strcmp(key, "root") == 0) {
			it->root = 1;
			bad = json_skip(j);
		} else if (strcmp(key, "package") == 0) {
			/* OneNote notebooks: neither file nor folder */
			it->type = ITEM_PACKAGE;
			bad = json_skip(j);
		} else if (strcmp(key, "file") == 0 ||
		    strcmp(key, "folder") == 0 ||
		    strcmp(key, "fileSystemInfo") == 0) {
			if (it->type != ITEM_PACKAGE && strcmp(key, "file") == 0)
				it->type = ITEM_FILE;
			else if (it->type != ITEM_PACKAGE &&
			    strcmp(key, "folder") == 0)
				it->type = ITEM_FOLDER;
			bad = parse_facet(j, it, key, fsmod);
		} else
			bad = json_skip(j);
	}
	if (bad || ev != JSON_OBJ_END)
		return -1;
	if (fsmod[0])
		scopy(it->modified, sizeof(it->modified), fsmod);
	if (it->type == ITEM_NONE && it->root)
		it->type = ITEM_FOLDER;
	if (item_check(it) == -1) {
		json_fail(j, "an item with an unusable name or field");
		return -1;
	}
	/* 20 bytes in base64 (10.1): any other form would turn the check
	 * of a transfer off, so it is refused, not skipped */
	if (it->qxh[0] && (strlen(it->qxh) != 28 || it->qxh[27] != '=' ||
	    strspn(it->qxh, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	    "0123456789+/") != 27)) {
		json_fail(j, "an improper quickXorHash");
		return -1;
	}
	return 0;
}

/* A whole response body that is one driveItem. */
static int
parse_item(struct conn *c, struct http_resp *r, struct item *it)
{
	static struct json j;
	struct body b = { c, r, 0 };

	json_init(&j, body_read, &b);
	return body_end(&b, &j, json_next(&j) != JSON_OBJ ||
	    parse_item_body(&j, it) == -1 || json_next(&j) != JSON_END,
	    "driveItem");
}

/*
 * Drive paths.  path_norm() makes "/a/b" of what the user typed ("a//b/",
 * "/") and refuses "." and ".." segments and characters the service
 * cannot store (graph-api.md 3.4), so the error is ours and clear.
 * graph_url() addresses an item by path, closing the path with ':'
 * before any sub-resource (3.2); the root is ".../root".
 */
static int
path_norm(char *out, size_t sz, const char *in)
{
	const char *s = in, *e;
	size_t	 n, len = 0;

	if (strlen(in) >= sz)
		return fail(EXIT_USAGE, "path too long: %.60s...", in);
	out[0] = '\0';
	for (;;) {
		s += strspn(s, "/");
		if (*s == '\0')
			break;
		e = s + strcspn(s, "/");
		n = (size_t)(e - s);
		if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' &&
		    s[1] == '.'))
			return fail(EXIT_USAGE, "%s: '.' and '..' are not "
			    "allowed in remote paths", in);
		if (strcspn(s, "\"*:<>?\\|") < n)
			return fail(EXIT_USAGE, "%s: remote names cannot hold "
			    "any of \" * : < > ? \\ |", in);
		if (len + 1 + n >= sz)
			return fail(EXIT_USAGE, "path too long: %.60s...", in);
		out[len++] = '/';
		memcpy(out + len, s, n);
		len += n;
		out[len] = '\0';
		s = e;
	}
	if (len == 0)
		strcpy(out, "/");
	return 0;
}

/* Control characters cannot be stored either; checked on create. */
static int
name_check(const char *path)
{
	const unsigned char *p;
	const char *b = base_name(path);

	for (p = (const unsigned char *)path; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return fail(EXIT_USAGE, "%s: remote names cannot hold "
			    "control characters", path);
	if (b[0] == ' ' || (b[0] && b[strlen(b) - 1] == ' '))
		return fail(EXIT_USAGE, "%s: remote names cannot begin or end "
		    "with a space", path);
	return 0;
}

static void
graph_url(struct graph *g, char *out, size_t sz, const char *path,
    const char *sub)
{
	static char enc[PATH_MAX_ * 3];

	if (path_encode(enc, sizeof(enc), path) == -1)
		BUG("path too long");
	if (strcmp(path, "/") == 0)
		bfmt(out, sz, "%s/root%s%s", g->base, sub ? "/" : "",
		    sub ? sub : "");
	else
		bfmt(out, sz, "%s/root:%s%s%s", g->base, enc, sub ? ":/" : "",
		    sub ? sub : "");
}

static void
req_init(struct http_req *q, const char *method)
{
	memset(q, 0, sizeof(*q));
	q->method = method;
	q->fd = -1;
	q->hdrs = "Accept: application/json\r\n";
}

/*
 * GET one item's metadata.  how: G_MISSING_OK, a 404 is no error and
 * returns 1 (the caller is asking whether the item exists); G_FRESH,
 * odcp has just written it.
 */
static int
graph_stat(struct graph *g, const char *path, struct item *it, int how)
{
	char	 url[URL_MAX];
	struct http_req q;
	struct http_resp r;
	struct conn *c;
	int	 attempt = 0, rc;

	g->what = path;
	graph_url(g, url, sizeof(url), path, NULL);
	do {
		req_init(&q, "GET");
		if (graph_request(g, url, &q, &r, &c, G_AUTH | G_IDEMPOTENT |
		    (how & G_FRESH)) == -1)
			return -1;
		if (r.status == 404 && (how & G_MISSING_OK)) {
			http_drop(c, &r);
			return 1;
		}
		if (r.status != 200)
			return graph_error(c, &r, path);
		hush = 1;
		body_broke = 0;
		rc = parse_item(c, &r, it);
		hush = 0;
	} while (rc == -1 && graph_again(&attempt));
	return rc;
}

/*
 * The driveItem in the answer to a write the service has done (200,
 * 201).  If that answer breaks off, the item is read back instead: the
 * write must not be repeated.
 */
static int
graph_written(struct graph *g, struct conn *c, struct http_resp *r,
    const char *path, struct item *it)
{
	int	 rc;

	hush = 1;
	body_broke = 0;
	rc = parse_item(c, r, it);
	hush = 0;
	if (rc == 0 || !body_broke)
		return rc == 0 ? 0 : release();
	debug(1, "%s: %s; reading the item back", path, held);
	held[0] = '\0';
	return graph_stat(g, path, it, 0);
}

/*
 * A listing page: {"value":[items...],"@odata.nextLink":"..."}.  Items
 * are handed to fn as they stream in, except the first skip (handed on
 * by an earlier try of the same page); next gets the nextLink or "".
 * *count: the items read, skipped ones included.
 */
typedef int (*item_fn)(const struct item *, void *);

static int
parse_page(struct conn *c, struct http_resp *r, item_fn fn, void *arg,
    char *next, size_t nextsz, long *count, long skip)
{
	static struct json j;
	static struct item it;
	struct body b = { c, r, 0 };
	enum json_ev ev = JSON_ERR;
	int	 bad = 0, rc = 0;

	next[0] = '\0';
	*count = 0;
	json_init(&j, body_read, &b);
	if (json_next(&j) != JSON_OBJ)
		bad = 1;
	while (!bad && rc == 0 && (ev = json_next(&j)) == JSON_KEY) {
		if (strcmp(j.str, "@odata.nextLink") == 0)
			bad = json_get_str(&j, next, nextsz);
		else if (strcmp(j.str, "value") == 0) {
			if (json_next(&j) != JSON_ARR) {
				bad = 1;
				break;
			}
			while (rc == 0 && (ev = json_next(&j)) == JSON_OBJ) {
				if (parse_item_body(&j, &it) == -1) {
					bad = 1;
					break;
				}
				if (*count >= skip)
					rc = fn(&it, arg);
				(*count)++;
			}
			if (!bad && rc == 0 && ev != JSON_ARR_END)
				bad = 1;
		} else
			bad = json_skip(&j);
	}
	if (!bad && rc == 0 && (ev != JSON_OBJ_END || json_next(&j) != JSON_END))
		bad = 1;
	if (body_end(&b, &j, bad && rc == 0, "listing page") == -1)
		return -1;
	return rc;
}

/* List a folder, following @odata.nextLink to the end (4.1). */
static int
graph_list(struct graph *g, const char *path, item_fn fn, void *arg)
{
	static char url[URL_MAX], next[URL_MAX];
	static uint64_t seen[LIST_SEEN];	/* hashes of recent page URLs */
	uint64_t h;
	struct http_req q;
	struct http_resp r;
	struct conn *c;
	struct url gu, nu;
	long	 pages, n, done = 0, empty = 0;
	int	 rc, i, attempt = 0;

	g->what = path;
	/* only the fields odcp reads: a listing is 3 to 5 times smaller
	 * without each file's pre-authenticated download URL (4.1) */
	graph_url(g, url, sizeof(url), path, "children?$select=" ITEM_FIELDS);
	if (url_parse(g->p->graph_url, &gu) == -1)
		return -1;
	memset(seen, 0, sizeof(seen));
	for (pages = 0; url[0]; pages++) {
		req_init(&q, "GET");
		if (graph_request(g, url, &q, &r, &c, G_AUTH | G_IDEMPOTENT)
		    == -1)
			return -1;
		if (r.status != 200)
			return graph_error(c, &r, path);
		/* a page that breaks off is asked again; what it handed on
		 * already is not handed on twice (same URL, same page) */
		hush = 1;
		body_broke = 0;
		rc = parse_page(c, &r, fn, arg, next, sizeof(next), &n, done);
		hush = 0;
		if (rc == -1 && graph_again(&attempt)) {
			done = n > done ? n : done;
			pages--;
			continue;
		}
		if (rc != 0)
			return rc;
		done = 0;
		attempt = 0;
		/* a listing must end: no page may come back, nor run after
		 * run of empty pages (the service may send a few) */
		seen[pages % LIST_SEEN] = fnv1a(url);
		h = fnv1a(next);
		for (i = 0; next[0] && i < LIST_SEEN; i++)
			if (seen[i] == h)
				return err1("%s: the listing's pages repeat", path);
		if ((empty = n == 0 ? empty + 1 : 0) > LIST_EMPTY_MAX)
			return err1("%s: the listing sends only empty pages",
			    path);
		/* the token goes to the Graph host only, whatever a link says */
		if (next[0] && (url_parse(next, &nu) == -1 ||
		    strcasecmp(nu.host, gu.host) != 0 ||
		    strcmp(nu.port, gu.port) != 0))
			return err1("%s: nextLink leads away from %s", path,
			    gu.host);
		bfmt(url, sizeof(url), "%s", next);
	}
	return 0;
}

/*
 * A Location may hold raw non-ASCII bytes, spaces or brackets
 * (graph-api.md 5.1): those are percent-encoded, '%' never re-encoded.
 */
static int
location_plain(int c)
{
	return c < 0x80 && c != ' ' && c != '[' && c != ']';
}

/*
 * The response that carries the content from byte have on: GET
 * .../content with the bearer token (url), or the pre-authenticated URL
 * it redirects to (loc, kept for resuming), without it and with Range
 * when resuming.  *flags tells which was asked last.  As
 * graph_request(); a redirect without a usable Location is reported.
 */
static int
download_open(struct graph *g, const char *path, const char *url, char *loc,
    int64_t have, struct http_resp *r, struct conn **cp, int *flags)
{
	char	 range[64];
	struct http_req q;
	int	 hops, rc;

	*flags = loc[0] ? G_SECRET | G_IDEMPOTENT | G_HOLD :
	    G_AUTH | G_IDEMPOTENT;
	for (hops = 0;; hops++) {
		req_init(&q, "GET");
		q.hdrs = NULL;
		if ((*flags & G_SECRET) && have > 0) {
			bfmt(range, sizeof(range), "Range: bytes=%" PRId64 "-\r\n",
			    have);
			q.hdrs = range;
		}
		rc = graph_request(g, loc[0] ? loc : url, &q, r, cp, *flags);
		if (rc == -1 || r->status < 300 || r->status > 399 ||
		    r->status == 304)
			return rc;
		http_drop(*cp, r);
		if (hops >= HTTP_REDIRECT_MAX)
			return err1("%s: too many redirects", path);
		if (r->location[0] == '\0') {	/* seen once: retry (5.1) */
			bfmt(held, sizeof(held), "HTTP %d without a Location",
			    r->status);
			held_status = EXIT_FAIL;
			g->lost = 1;
			return -1;
		}
		rc = pct_encode(loc, URL_MAX, r->location, location_plain);
		wipe(r->location, sizeof(r->location));
		if (rc == -1)
			return err1("%s: redirect Location too long", path);
		*flags = G_SECRET | G_IDEMPOTENT | G_HOLD;
	}
}

/* What a failure's report adds when a rerun can resume (trunc 2). */
static const char *
download_kept(int trunc, int64_t have)
{
	return trunc == 2 && have > 0 ? "; the partial file is kept: run the "
	    "same get again to resume" : "";
}

/*
 * Copy a 200 or 206 body into fd from byte *have on, hashing it.  A 200
 * where a range was asked starts fd again if it can be truncated (trunc)
 * and fails otherwise.  0: the body ended (*have may still be short), 1:
 * it broke off (held has why), -1: failure (reported).
 */

static int
download_body(struct conn *c, struct http_resp *r, const char *path,
    int64_t size, int fd, int trunc, struct qxh *h, int64_t *have)
{
	static unsigned char buf[IO_BUF];
	char	 why[sizeof(held)];
	const char *bad = NULL;
	struct qxh h0;
	int64_t	 a, z, t, have0;
	long	 n = 0;
	int	 e;

	if (r->status == 206 && (sscanf(r->content_range, "bytes %" SCNd64
	    "-%" SCNd64 "/%" SCNd64, &a, &z, &t) != 3 || a != *have ||
	    t != size))
		bad = "the download host sent another range than asked";
	else if (r->status == 200 && *have > 0 && !trunc)
		bad = "the download host cannot resume, and a pipe cannot "
		    "start again";
	else if (r->status == 200 && *have > 0) {
		debug(1, "%s: the download host sent the whole file: starting "
		    "again", path);
		if (ftruncate(fd, 0) == -1 || lseek(fd, 0, SEEK_SET) == -1)
			bad = "truncate:";
		qxh_init(h);
		*have = 0;
	}
	h0 = *h;
	have0 = *have;
	while (bad == NULL) {
		hush = 1;
		n = http_read(c, r, buf, sizeof(buf));
		hush = 0;
		if (n <= 0)
			break;
		if (*have + n > size) {		/* never more than announced */
			bad = "the download is longer than the size the service "
			    "announced";
			*h = h0;	/* nor anything of such a body */
			*have = have0;
			if (ftruncate(fd, (off_t)have0) == -1 ||
			    lseek(fd, (off_t)have0, SEEK_SET) == -1)
				*have = 0;
		} else if (write_all(fd, buf, (size_t)n) == -1)
			bad = "write:";
		else {
			qxh_update(h, buf, (size_t)n);
			*have += n;
		}
	}
	e = errno;
	http_done(c, r);
	if (bad != NULL) {
		conn_close(c);
		errno = e;
		report_tail = download_kept(trunc, *have);
		err1("%s: %s", path, bad);
		report_tail = "";
		return -1;
	}
	if (n == 0)
		return 0;
	bfmt(why, sizeof(why), "%s", held);
	bfmt(held, sizeof(held), "%s: %s at byte %" PRId64 " of %" PRId64, path,
	    why, *have, size);
	return 1;
}

/*
 * Download an item's content into fd, from byte *have on (the bytes
 * before it are in fd and in h already), through download_open() and
 * download_body().  A transfer that breaks goes on from where it
 * stopped; a URL the download host no longer takes (401, 403, 404) is
 * replaced by a fresh one, without touching the Graph token (5.2, 9.4);
 * a 416 to a resume starts the file again.  Waits and attempts follow
 * the --retries budget, renewed each time new bytes flow (past the
 * furthest point reached, so a host that keeps sending the start again
 * cannot keep odcp going).  trunc: fd is a partial file that can start
 * again; 2: one a rerun resumes, which a failure's report says.
 */
static int
graph_download(struct graph *g, const char *path, int64_t size, int fd,
    int trunc, struct qxh *h, int64_t *have)
{
	static char url[URL_MAX], loc[URL_MAX];
	struct http_resp r;
	struct conn *c;
	const struct http_resp *ra;	/* its Retry-After sets the wait */
	char	 why[sizeof(held)];
	int	 rc = 0, fails = 0, flags;
	int64_t	 high = *have, wait;

	g->what = path;
	loc[0] = '\0';
	graph_url(g, url, sizeof(url), path, "content");
	while (*have < size || size == 0) {
		ra = NULL;
		report_tail = download_kept(trunc, *have);
		rc = download_open(g, path, url, loc, *have, &r, &c, &flags);
		report_tail = "";
		if (rc == -1 && !g->lost)
			break;
		if (rc == -1) {		/* the transport's report, held */
			bfmt(why, sizeof(why), "%s", held);
			bfmt(held, sizeof(held), "%s: %s", path, why);
		} else if ((flags & G_SECRET) && (r.status == 401 ||
		    r.status == 403 || r.status == 404)) {
			/* the pre-authenticated URL expired: get a new one */
			bfmt(held, sizeof(held), "%s: the download host refused "
			    "its URL (HTTP %d)", path, r.status);
			http_drop(c, &r);
			wipe(loc, sizeof(loc));
		} else if (r.status == 416 && *have > 0) {
			/* (a partial file as long as the item is not asked
			 * for: no 416 for a range at its end, 5.3) */
			http_drop(c, &r);
			if (!trunc) {
				rc = err1("%s: the download host refused to "
				    "resume (HTTP 416)", path);
				break;
			}
			bfmt(held, sizeof(held), "%s: HTTP 416 to a resume", path);
			if (ftruncate(fd, 0) == -1 || lseek(fd, 0, SEEK_SET) == -1) {
				rc = err1("%s: truncate:", path);
				break;
			}
			qxh_init(h);
			*have = 0;
		} else if (r.status == 200 || r.status == 206) {
			rc = download_body(c, &r, path, size, fd, trunc, h, have);
			if (rc == -1 || (*have == size && (rc == 0 || size > 0)))
				break;
			if (rc == 0)
				bfmt(held, sizeof(held), "%s: the download ended "
				    "early at byte %" PRId64 " of %" PRId64, path,
				    *have, size);
			if (*have >= high + IO_BUF)
				fails = 0;	/* new bytes: a new budget */
			if (*have > high)
				high = *have;
		} else if (r.status < 500 && r.status != 429) {
			report_tail = download_kept(trunc, *have);
			rc = graph_error(c, &r, path);
			report_tail = "";
			break;
		} else {
			bfmt(held, sizeof(held), "%s: HTTP %d from %s", path,
			    r.status, c->host);
			http_drop(c, &r);
			ra = &r;
		}
		rc = -1;
		if ((wait = retry_wait(ra, fails)) < 0 || fails++ >= retries) {
			report_tail = download_kept(trunc, *have);
			err1("%s", held);
			report_tail = "";
			break;
		}
		retry_nap(wait, held);
		held[0] = '\0';
		rc = 0;
	}
	wipe(loc, sizeof(loc));
	return rc == -1 ? -1 : 0;
}

/* Send a JSON body (POST, PATCH) to Graph; r and *cp get the answer. */
static int
graph_send_json(struct graph *g, const char *method, const char *url,
    const char *body, struct http_resp *r, struct conn **cp, int flags)
{
	struct http_req q;

	req_init(&q, method);
	q.hdrs = "Content-Type: application/json\r\nAccept: application/json\r\n";
	q.body = body;
	q.blen = strlen(body);
	q.has_body = 1;
	return graph_request(g, url, &q, r, cp, G_AUTH | flags);
}

/*
 * An idempotent JSON request whose answer is a driveItem, or an error;
 * an answer that breaks off after its head is read back (the request
 * was done).
 */
static int
graph_json(struct graph *g, const char *method, const char *url,
    const char *body, const char *what, int flags, struct item *it)
{
	struct http_resp r;
	struct conn *c;

	g->what = what;
	if (graph_send_json(g, method, url, body, &r, &c, flags) == -1)
		return -1;
	if (r.status != 200 && r.status != 201)
		return graph_error(c, &r, what);
	return graph_written(g, c, &r, what, it);
}

/*
 * Right after odcp creates a folder the service may answer 404 for it
 * for a moment.  Requests inside a folder made in this run carry
 * G_FRESH, which allows a short bounded retry of that 404 only.
 */
static void
graph_made(struct graph *g, const char *path)
{
	scopy(g->made[g->nmade++ % FRESH_RECENT], PATH_MAX_, path);
}

static int
graph_fresh(struct graph *g, const char *path)
{
	const char *b = base_name(path);
	size_t	 n = (size_t)(b - path) - (b - path > 1);
	int	 i;

	for (i = 0; i < FRESH_RECENT && i < g->nmade; i++)
		if (strlen(g->made[i]) == n && strncmp(g->made[i], path, n) == 0)
			return G_FRESH;
	return 0;
}

/*
 * A POST that is not idempotent failed without a usable answer (the
 * connection broke, or a 5xx): the service may or may not have acted.
 * Returns 1 to ask again, after the caller has re-read and decided;
 * -1 when the attempts are spent (reported).
 */
static int
graph_unsure(struct graph *g, struct conn *c, struct http_resp *r, int rc,
    int *attempt, const char *what)
{
	int64_t	 wait;

	if (rc == -1 && !g->lost)
		return -1;
	wait = retry_wait(rc == 0 ? r : NULL, *attempt);
	if (*attempt >= retries || wait < 0)
		return rc == 0 ? graph_error(c, r, what) :
		    release_after(what, *attempt + 1);
	if (rc == 0) {
		http_drop(c, r);
		bfmt(held, sizeof(held), "%s: HTTP %d", what, r->status);
	}
	(*attempt)++;
	retry_nap(wait, held);
	held[0] = '\0';
	return 1;
}

/*
 * Create one folder; the parent must exist (8.1).  exist_ok: a folder of
 * that name already there is success (409 nameAlreadyExists, then a GET
 * confirms it is a folder), as mkdir -p wants.  If the answer is lost,
 * a GET decides: a folder there now is taken as made.
 */
static int
graph_mkdir(struct graph *g, const char *path, struct item *it, int exist_ok)
{
	char	 parent[PATH_MAX_], url[URL_MAX], name[NAME_MAX_ * 2];
	char	 body[NAME_MAX_ * 2 + 128];
	const char *b = base_name(path);
	struct http_resp r;
	struct conn *c = NULL;
	int	 rc, attempt = 0;

	g->what = path;
	if (name_check(path) == -1)
		return -1;
	bfmt(parent, sizeof(parent), "%.*s", (int)(b - path - 1), path);
	if (parent[0] == '\0')
		strcpy(parent, "/");
	graph_url(g, url, sizeof(url), parent, "children");
	if (json_escape(name, sizeof(name), b) == -1)
		return fail(EXIT_USAGE, "%s: name too long", path);
	bfmt(body, sizeof(body), "{\"name\":\"%s\",\"folder\":{},"
	    "\"@microsoft.graph.conflictBehavior\":\"fail\"}", name);
	for (;;) {
		rc = graph_send_json(g, "POST", url, body, &r, &c,
		    G_HOLD | graph_fresh(g, path));
		if (rc == 0 && r.status < 500 && r.status != 429)
			break;
		if (graph_unsure(g, c, &r, rc, &attempt, path) == -1)
			return -1;
		if ((rc = graph_stat(g, path, it, G_MISSING_OK)) == -1)
			return -1;
		if (rc == 0 && it->type == ITEM_FOLDER) {
			graph_made(g, path);
			return 0;
		}
		if (rc == 0)
			return fail(EXIT_EXISTS, "%s exists and is not a folder",
			    path);
	}
	if (r.status == 409 && exist_ok) {
		http_drop(c, &r);
		if (graph_stat(g, path, it, 0) == -1)
			return -1;
		return it->type == ITEM_FOLDER ? 0 :
		    fail(EXIT_EXISTS, "%s exists and is not a folder", path);
	}
	if (r.status == 404 && !exist_ok) {
		http_drop(c, &r);
		return fail(EXIT_NOTFOUND, "%s: folder %s does not exist "
		    "(mkdir -p creates it)", path, parent);
	}
	if (r.status != 201 && r.status != 200)
		return graph_error(c, &r, path);
	graph_made(g, path);
	return graph_written(g, c, &r, path, it);
}

static int
graph_delete(struct graph *g, const char *path)
{
	char	 url[URL_MAX];
	struct http_req q;
	struct http_resp r;
	struct conn *c;

	g->what = path;
	graph_url(g, url, sizeof(url), path, NULL);
	req_init(&q, "DELETE");
	if (graph_request(g, url, &q, &r, &c, G_AUTH | G_IDEMPOTENT) == -1)
		return -1;
	if (r.status == 404 && g->resent) {
		/* the first DELETE worked; its answer was lost */
		debug(1, "%s: gone after a lost answer", path);
		http_drop(c, &r);
		return 0;
	}
	if (r.status != 204 && r.status != 200)
		return graph_error(c, &r, path);
	http_drop(c, &r);
	return 0;
}

/*
 * Uploads (graph-api.md 6, 7).  Up to SIMPLE_UPLOAD_MAX bytes, and every
 * empty file, go in one PUT .../content; anything larger goes through an
 * upload session: fragments of a multiple of 320 KiB, each under 60 MiB,
 * each with Content-Range and without Authorization, sent in order.  The
 * conflict policy is always sent explicitly, and the local mtime as
 * fileSystemInfo.
 *
 * A session survives failures.  Where to go on always comes from the
 * service (nextExpectedRanges), never from a local counter: after a
 * dropped connection, a timeout, a 5xx, a 416 or a 401 from the upload
 * host, odcp asks the session (GET uploadUrl) what it still needs (7.3).
 * A session that is gone (404) is replaced by a new one, from byte 0.
 * The session URL is kept in a state file, so the same put in a later
 * run resumes where the service stands, if the local file is unchanged.
 */
struct upload {
	const char *path;		/* remote, normalised */
	const char *conflict;		/* fail, replace or rename */
	int	 fd;
	int64_t	 size;
	int64_t	 mtime;
	int64_t	 fragment;
	char	 ident[128];		/* the local file: size, mtime, ctime,
					 * inode */
	struct item it;			/* the result */
	struct qxh h;			/* the content hashed as it is sent */
	int64_t	 hashed;		/* bytes 0 to hashed-1 are in h */
	char	 qxh[29];		/* the local content's hash */
	char	 url[URL_MAX];		/* the session: a credential */
	char	 state[LPATH_MAX + 64];	/* its state file */
	int64_t	 expires;		/* the session's, as last heard */
	int64_t	 saved;			/* the expiry in the state file */
	int64_t	 to;			/* the end of the last fragment sent */
	int	 keep;			/* failed, but a rerun can resume */
};

/*
 * The http_req tap of an upload: each byte is hashed once, in order, the
 * first time it is sent; a fragment sent again is not hashed again.
 */
static void
upload_tap(void *ctx, int64_t off, const unsigned char *p, size_t n)
{
	struct upload *u = ctx;
	int64_t	 skip = u->hashed - off;

	if (skip < 0 || skip >= (int64_t)n)
		return;
	qxh_update(&u->h, p + skip, n - (size_t)skip);
	u->hashed += (int64_t)n - skip;
}

/*
 * The local content's hash in u->qxh, for comparing with the service's.
 * The tap has hashed every byte sent in order; only if the service
 * skipped ahead (a resumed session) is the file read once more.
 */
static int
upload_hash(struct upload *u)
{
	static unsigned char buf[IO_BUF];
	struct qxh h;
	int64_t	 off;
	ssize_t	 n;

	if (u->qxh[0])
		return 0;
	if (u->hashed == u->size) {
		h = u->h;
		qxh_final(&h, u->qxh);
		return 0;
	}
	qxh_init(&h);
	for (off = 0; off < u->size; off += n) {
		n = pread_full(u->fd, buf, u->size - off < (int64_t)sizeof(buf) ?
		    (size_t)(u->size - off) : sizeof(buf), (off_t)off);
		if (n < 0)
			return err1("%s: read:", u->path);
		if (n == 0)
			return err1("%s: file shrank while being read", u->path);
		qxh_update(&h, buf, (size_t)n);
	}
	qxh_final(&h, u->qxh);
	return 0;
}

/*
 * An uploadSession: {"uploadUrl", "expirationDateTime",
 * "nextExpectedRanges": ["N-", "a-b", ...]}, the ranges in any order.
 * *next gets the first byte the service still wants and *end the end of
 * the run of missing bytes from there (-1: open), ranges that touch or
 * overlap taken as one; *next = -1 when it wants none.  A range outside
 * the file, or more than RANGES_MAX, is nonsense and refused.
 */
static int
parse_session(struct conn *c, struct http_resp *r, struct upload *u,
    int want_url, int64_t *next, int64_t *end)
{
	static struct json j;
	struct body b = { c, r, 0 };
	enum json_ev ev = JSON_ERR;
	char	 when[FIELD_MAX], what[160], *dash;
	int	 bad = 0, n = 0, i, grew;
	int64_t	 a, z, ra[RANGES_MAX], rz[RANGES_MAX];

	*next = *end = -1;
	if (want_url)
		u->url[0] = '\0';
	json_init(&j, body_read, &b);
	if (json_next(&j) != JSON_OBJ)
		bad = 1;
	while (!bad && (ev = json_next(&j)) == JSON_KEY) {
		if (want_url && strcmp(j.str, "uploadUrl") == 0)
			bad = json_get_str(&j, u->url, sizeof(u->url));
		else if (strcmp(j.str, "expirationDateTime") == 0) {
			if ((bad = json_get_str(&j, when, sizeof(when))) == 0 &&
			    time_parse(when, &a) == 0)
				u->expires = a;
		} else if (strcmp(j.str, "nextExpectedRanges") == 0) {
			if (json_next(&j) != JSON_ARR) {
				bad = 1;
				break;
			}
			while (!bad && (ev = json_next(&j)) == JSON_STR) {
				z = -1;
				if ((dash = strchr(j.str, '-')) == NULL) {
					json_fail(&j, "range without '-'");
					bad = 1;
					break;
				}
				*dash = '\0';
				if (parse_int(j.str, 0, INT64_MAX, &a) == -1 ||
				    (dash[1] && parse_int(dash + 1, 0, INT64_MAX,
				    &z) == -1) || (z >= 0 && z < a)) {
					json_fail(&j, "improper range");
					bad = 1;
				} else if (a >= u->size || z >= u->size) {
					json_fail(&j, "range beyond the end of "
					    "the file");
					bad = 1;
				} else if (n == RANGES_MAX) {
					json_fail(&j, "too many ranges");
					bad = 1;
				} else {
					ra[n] = a;
					rz[n++] = z < 0 ? u->size - 1 : z;
					if (*next == -1 || a < *next)
						*next = a;
				}
			}
			if (!bad && ev != JSON_ARR_END)
				bad = 1;
		} else
			bad = json_skip(&j);
	}
	if (!bad && (ev != JSON_OBJ_END || json_next(&j) != JSON_END))
		bad = 1;
	if (bad)
		net_permanent = 1;
	/* the run of missing bytes from *next: ranges joined while one
	 * starts at or before the byte after the run */
	for (*end = *next - 1, grew = n > 0; grew; )
		for (grew = 0, i = 0; i < n; i++)
			if (ra[i] <= *end + 1 && rz[i] > *end) {
				*end = rz[i];
				grew = 1;
			}
	if (n == 0 || *end == u->size - 1)
		*end = -1;		/* none, or to the end of the file */
	bfmt(what, sizeof(what), "upload session reply for %.100s", u->path);
	return body_end(&b, &j, bad, what);
}

/*
 * A simple upload of a whole file.  replace may be repeated; fail and
 * rename are not repeated blindly: after a lost answer the item is read
 * back, and if it holds exactly these bytes the upload happened.
 */
static int
upload_simple(struct graph *g, struct upload *u)
{
	char	 url[URL_MAX], q2[64], sum[29];
	struct http_req q;
	struct http_resp r;
	struct conn *c = NULL;
	struct qxh h;
	int	 rc, attempt = 0, replace = strcmp(u->conflict, "replace") == 0;

	graph_url(g, url, sizeof(url), u->path, "content");
	bfmt(q2, sizeof(q2), "?@microsoft.graph.conflictBehavior=%s",
	    u->conflict);
	if (bcat(url, sizeof(url), q2, strlen(q2)) == -1)
		return err1("%s: URL too long", u->path);
	for (;;) {
		req_init(&q, "PUT");
		q.hdrs = "Content-Type: application/octet-stream\r\n"
		    "Accept: application/json\r\n";
		q.fd = u->fd;
		q.off = 0;
		q.flen = u->size;
		q.has_body = 1;
		q.tap = upload_tap;
		q.tapctx = u;
		rc = graph_request(g, url, &q, &r, &c, G_AUTH |
		    graph_fresh(g, u->path) | (replace ? G_IDEMPOTENT : G_HOLD));
		if (replace || (rc == 0 && r.status < 500 && r.status != 429))
			break;
		if (graph_unsure(g, c, &r, rc, &attempt, u->path) == -1)
			return -1;
		if ((rc = graph_stat(g, u->path, &u->it, G_MISSING_OK)) == -1)
			return -1;
		h = u->h;
		qxh_final(&h, sum);
		if (rc == 0 && u->hashed == u->size && u->it.size == u->size &&
		    strcmp(u->it.qxh, sum) == 0)
			return 0;
		if (rc == 0 && strcmp(u->conflict, "fail") == 0)
			return fail(EXIT_EXISTS, "%s: HTTP 409 nameAlreadyExists: "
			    "an item with other content is there", u->path);
		if (rc == 0)
			return err1("%s: the answer was lost and the service may "
			    "have stored the file under a new name", u->path);
	}
	if (rc == -1)
		return -1;
	if (r.status != 200 && r.status != 201)
		return graph_error(c, &r, u->path);
	return graph_written(g, c, &r, u->path, &u->it);
}

/* After a simple upload: set the mtime the session would have sent. */
static int
upload_mtime(struct graph *g, struct upload *u)
{
	char	 url[URL_MAX], when[FIELD_MAX], body[256], id[ID_MAX * 3];

	if (path_encode(id, sizeof(id), u->it.id) == -1)
		return err1("%s: item id too long", u->path);
	bfmt(url, sizeof(url), "%s/items/%s", g->base, id);
	time_format(when, sizeof(when), u->mtime);
	bfmt(body, sizeof(body), "{\"fileSystemInfo\":"
	    "{\"lastModifiedDateTime\":\"%s\"}}", when);
	return graph_json(g, "PATCH", url, body, u->path,
	    G_IDEMPOTENT | G_FRESH, &u->it);
}

/* Cancel a session so the service frees its space (7.3); best effort. */
static void
upload_cancel(struct graph *g, const char *url)
{
	struct http_req q;
	struct http_resp r;
	struct conn *c;
	int	 saved = exit_status, was = retries;

	req_init(&q, "DELETE");
	q.hdrs = NULL;
	silent = 1;	/* the upload's own failure is the one to report */
	retries = 1;
	if (graph_request(g, url, &q, &r, &c, G_SECRET | G_IDEMPOTENT) == 0)
		http_drop(c, &r);
	retries = was;
	silent = 0;
	exit_status = saved;
}

/* Forget the session: cancel it and remove its state file. */
static void
upload_forget(struct graph *g, struct upload *u)
{
	if (u->url[0])
		upload_cancel(g, u->url);
	if (u->state[0])
		unlink(u->state);
	wipe(u->url, sizeof(u->url));
}

/*
 * Write the session to its state file, for a later run to resume; again
 * whenever the service has pushed its expiry on (each fragment does,
 * 7.4), so the file never calls a live session expired.
 */
static int
session_save(struct upload *u)
{
	static char text[STATE_MAX];
	int	 rc = -1;

	if (!has_control(u->url)) {
		bfmt(text, sizeof(text), "# odcp upload session: keep secret\n"
		    "path=%s\nlocal=%s\nconflict=%s\nfragment=%" PRId64
		    "\nexpires=%" PRId64 "\nurl=%s\n", u->path, u->ident,
		    u->conflict, u->fragment, u->expires, u->url);
		rc = state_save(u->state, text);
		wipe(text, sizeof(text));
	}
	if (rc == -1)			/* said once; not tried again */
		u->state[0] = '\0';
	u->saved = u->expires;
	return rc;
}

/* Create a session (7.1) and save it in the state file. */
static int
session_create(struct graph *g, struct upload *u)
{
	static char url[URL_MAX];
	char	 body[512], when[FIELD_MAX];
	struct http_resp r;
	struct conn *c = NULL;
	int64_t	 next, end;
	int	 rc, attempt = 0;
	static struct item it;

	graph_url(g, url, sizeof(url), u->path, "createUploadSession");
	time_format(when, sizeof(when), u->mtime);
	/* "name" is left out: it must match the path exactly (7.1) */
	bfmt(body, sizeof(body), "{\"item\":{\"@microsoft.graph."
	    "conflictBehavior\":\"%s\",\"fileSystemInfo\":"
	    "{\"lastModifiedDateTime\":\"%s\"}}}", u->conflict, when);
	u->expires = 0;
	for (;;) {
		rc = graph_send_json(g, "POST", url, body, &r, &c,
		    G_HOLD | graph_fresh(g, u->path));
		if (rc == 0 && r.status == 200) {
			hush = 1;
			body_broke = 0;
			rc = parse_session(c, &r, u, 1, &next, &end);
			hush = 0;
			if (rc == 0)
				break;
			if (!body_broke)
				return release();
			g->lost = 1;	/* the answer broke off: as if lost */
		} else if (rc == 0 && r.status < 500 && r.status != 429)
			break;
		/* a session is invisible until its last byte; a lost one
		 * expires by itself.  Only an item now there can decide. */
		if (graph_unsure(g, c, &r, rc, &attempt, u->path) == -1)
			return -1;
		if (strcmp(u->conflict, "fail") == 0 &&
		    (rc = graph_stat(g, u->path, &it, G_MISSING_OK)) != 1)
			return rc == -1 ? -1 : fail(EXIT_EXISTS, "%s: already "
			    "exists", u->path);
	}
	if (r.status != 200)
		return graph_error(c, &r, u->path);
	if (u->url[0] == '\0')
		return err1("%s: upload session without an uploadUrl", u->path);
	session_save(u);	/* a failure costs only the resume (said) */
	return 0;
}

/*
 * Ask the session what it still needs (7.3): 0 with *next and *end set,
 * 1 when the session is gone (404, or 401: its own token expired, 7.4),
 * -1 on failure (reported).
 */
static int
session_status(struct graph *g, struct upload *u, int64_t *next,
    int64_t *end)
{
	struct http_req q;
	struct http_resp r;
	struct conn *c;
	int	 attempt = 0, rc;

	do {
		req_init(&q, "GET");
		/* the state file stays: a rerun asks again */
		report_tail = "; run the same put again to resume";
		rc = graph_request(g, u->url, &q, &r, &c, G_SECRET | G_IDEMPOTENT);
		if (rc == 0 && (r.status == 404 || r.status == 401 ||
		    r.status == 410)) {
			http_drop(c, &r);
			rc = 1;
		} else if (rc == 0 && r.status != 200)
			rc = graph_error(c, &r, u->path);
		report_tail = "";
		if (rc != 0 || r.status != 200)
			return rc;
		hush = 1;
		body_broke = 0;
		rc = parse_session(c, &r, u, 0, next, end);
		hush = 0;
	} while (rc == -1 && graph_again(&attempt));
	return rc;
}

/*
 * The session has every byte, or has gone: is the item at the path this
 * very upload, committed by the service although the answer to the last
 * fragment was lost (7.4)?  Sending it all again would waste the whole
 * upload, and fail on --conflict fail.  It is, if it has the size and
 * modification time sent, and the local content's quickXorHash when the
 * service gives one.  fresh: the last fragment has just been sent, so a
 * 404 may only mean the item is not visible yet.  1: it is (u->it set),
 * 0: it is not, -1: failure.
 */
static int
upload_landed(struct graph *g, struct upload *u, int fresh)
{
	static struct item it;
	int64_t	 mt;
	int	 rc;

	if ((rc = graph_stat(g, u->path, &it, G_MISSING_OK |
	    (fresh ? G_FRESH : 0))) != 0)
		return rc == 1 ? 0 : -1;
	if (it.type != ITEM_FILE || it.size != u->size ||
	    time_parse(it.modified, &mt) == -1 || mt != u->mtime)
		return 0;
	if (it.qxh[0] && strlen(it.qxh) == 28) {
		if (upload_hash(u) == -1)
			return -1;
		if (strcmp(it.qxh, u->qxh) != 0)
			return 0;
	}
	debug(1, "%s: the service committed the file; its answer was lost",
	    u->path);
	u->it = it;
	return 1;
}

/*
 * The session saved by an earlier run, if it can go on: 0 with *next
 * set, 1 to start afresh (having said why), 2 when the earlier run's
 * upload had in fact been committed (u->it set), -1 on failure.
 */
static int
session_resume(struct graph *g, struct upload *u, int64_t *next,
    int64_t *end)
{
	static char text[STATE_MAX];
	char	 v[PATH_MAX_ + 128];
	const char *why = NULL;
	int64_t	 e = 0, frag = 0;
	int	 rc, ended = 0;

	if ((rc = state_load(u->state, text, sizeof(text))) != 0) {
		if (rc == -1)		/* unusable: said, and not saved to */
			u->state[0] = '\0';
		return 1;
	}
	state_get(text, "path", v, sizeof(v));
	if (strcasecmp(v, u->path) != 0) {	/* another file's */
		wipe(text, sizeof(text));
		return 1;
	}
	state_get(text, "url", u->url, sizeof(u->url));
	state_get(text, "expires", v, sizeof(v));
	parse_int(v, 0, INT64_MAX, &e);
	u->expires = u->saved = e;
	state_get(text, "fragment", v, sizeof(v));
	parse_int(v, 0, INT64_MAX, &frag);
	state_get(text, "local", v, sizeof(v));
	if (strcmp(v, u->ident) != 0)
		why = "the local file has changed since the interrupted upload";
	state_get(text, "conflict", v, sizeof(v));
	if (why == NULL && strcmp(v, u->conflict) != 0)
		why = "the interrupted upload had another --conflict";
	wipe(text, sizeof(text));
	if (why == NULL && strncmp(u->url, "https://", 8) != 0)
		why = "the saved session is unusable";
	if (why == NULL && e > 0 && e <= (int64_t)time(NULL)) {
		why = "the interrupted upload's session has expired";
		ended = 1;
	}
	if (why == NULL && (rc = session_status(g, u, next, end)) != 0) {
		if (rc == -1)
			return -1;
		why = "the interrupted upload's session is gone";
		ended = 1;
	}
	if (why == NULL && *next == -1) {
		why = "the interrupted upload's session has every byte";
		ended = 1;
	}
	/* killed after the last fragment was taken, the state file kept */
	if (ended && (rc = upload_landed(g, u, 0)) != 0) {
		if (rc == -1)
			return -1;
		if (!quiet)
			fprintf(stderr, "odcp: %s: the interrupted upload had "
			    "finished\n", u->path);
		unlink(u->state);
		wipe(u->url, sizeof(u->url));
		return 2;
	}
	if (why != NULL) {
		if (!quiet)
			fprintf(stderr, "odcp: %s: starting the upload afresh: "
			    "%s\n", u->path, why);
		upload_forget(g, u);
		return 1;
	}
	if (!quiet)
		fprintf(stderr, "odcp: %s: resuming the interrupted upload at "
		    "byte %" PRId64 " of %" PRId64 "\n", u->path, *next, u->size);
	if (frag != u->fragment)
		debug(1, "%s: going on in fragments of %" PRId64 " bytes (the "
		    "interrupted run sent %" PRId64 ")", u->path, u->fragment,
		    frag);
	return 0;
}

/*
 * PUT the fragment at off (up to end, if the session named one); *last:
 * it ends the file, and the service may take long to answer it.
 */
static int
fragment_put(struct graph *g, struct upload *u, int64_t off, int64_t end,
    struct http_resp *r, struct conn **cp, int *last)
{
	char	 hdr[256];
	struct http_req q;
	int64_t	 len;

	/* what the session lacks from off, in whole 320 KiB units unless it
	 * runs to the end of the file (7.2): a shorter run in the middle
	 * cannot be sent by the rules, and no session that took odcp's own
	 * fragments asks for one */
	len = u->size - off < u->fragment ? u->size - off : u->fragment;
	if (end >= 0 && end - off + 1 < len) {
		len = (end - off + 1) / FRAGMENT_UNIT * FRAGMENT_UNIT;
		if (len == 0) {
			g->lost = 0;
			*last = 0;
			return err1("%s: the upload session asks for bytes %"
			    PRId64 "-%" PRId64 ", less than one 320 KiB unit",
			    u->path, off, end);
		}
	}
	bfmt(hdr, sizeof(hdr), "Content-Range: bytes %" PRId64 "-%" PRId64
	    "/%" PRId64 "\r\n", off, off + len - 1, u->size);
	req_init(&q, "PUT");
	q.hdrs = hdr;
	q.fd = u->fd;
	q.off = (off_t)off;
	q.flen = len;
	q.has_body = 1;
	q.tap = upload_tap;
	q.tapctx = u;
	debug(1, "%s: bytes %" PRId64 "-%" PRId64 " of %" PRId64, u->path, off,
	    off + len - 1, u->size);
	*last = off + len == u->size;
	u->to = off + len;
	return graph_request(g, u->url, &q, r, cp, G_SECRET | G_IDEMPOTENT |
	    G_HOLD | (*last ? G_SLOW : 0));
}

/*
 * A fragment failed: no answer (r NULL), or a 401, 404, 416, 429 or 5xx
 * in r.  A 5xx may come after the bytes were taken (the last fragment
 * above all, 7.4), so nothing is resent blindly: after the wait, the
 * session says where to go on.  0 with *off and *end set (*off -1: it
 * has every byte), 1 when the session is gone, -1 on failure (reported;
 * u->keep when a rerun can resume).
 */
static int
fragment_failed(struct graph *g, struct upload *u, struct conn *c,
    struct http_resp *r, int *fails, int64_t *off, int64_t *end)
{
	char	 why[sizeof(held)];
	int64_t	 wait;
	int	 rc;

	if (r != NULL) {
		tidy(r->retry_after);
		bfmt(held, sizeof(held), "HTTP %d from the upload host%s%s",
		    r->status, r->retry_after[0] ? ", Retry-After: " : "",
		    r->retry_after);
		http_drop(c, r);
		if (r->status == 404)
			return 1;
	}
	wait = retry_wait(r, *fails);
	if ((*fails)++ >= retries || wait < 0) {
		u->keep = 1;
		return err1("%s: upload stopped at byte %" PRId64 " of %" PRId64
		    " (%s); run the same put again to resume", u->path, *off,
		    u->size, held);
	}
	bfmt(why, sizeof(why), "%s: %s", u->path, held);
	if (r == NULL || r->status != 416)
		retry_nap(wait, why);
	held[0] = '\0';
	if ((rc = session_status(g, u, off, end)) == -1)
		u->keep = 1;
	return rc;
}

/* Send fragments from off until the service commits the file. */
static int
upload_fragments(struct graph *g, struct upload *u, int64_t off,
    int64_t end)
{
	struct http_resp r;
	struct conn *c = NULL;
	long	 rounds, cap;
	int	 rc, gone, last, fails = 0, restarts = 0;
	int64_t	 low = off;		/* the first byte the service lacks */
	int64_t	 at;

	/* every round moves forward, or spends one of the retries or one
	 * of the session restarts: so this cap is never reached by a
	 * service that keeps to the protocol */
	cap = (long)(u->size / FRAGMENT_UNIT) * (SESSION_RESTARTS + 1) +
	    (long)(retries + 2) * (SESSION_RESTARTS + 2) + 16;
	for (rounds = 0; rounds < cap; rounds++) {
		rc = fragment_put(g, u, off, end, &r, &c, &last);
		if (rc == -1 && !g->lost)
			return -1;
		gone = 0;
		if (rc == 0 && (r.status == 200 || r.status == 201)) {
			/* whole only once its last missing byte is in */
			if (!last && (end == -1 || u->to <= end)) {
				http_drop(c, &r);
				return err1("%s: the upload host took the file as "
				    "whole at byte %" PRId64 " of %" PRId64,
				    u->path, u->to, u->size);
			}
			return graph_written(g, c, &r, u->path, &u->it);
		}
		if (rc == 0 && r.status == 202) {
			at = off;
			hush = 1;
			body_broke = 0;
			rc = parse_session(c, &r, u, 0, &off, &end);
			hush = 0;
			if (rc == -1 && !body_broke)
				return release();
			if (rc == -1)
				off = at;
		}
		if (rc == -1) {
			/* no answer, or a 202 that broke off: ask the
			 * session where it stands */
			if ((gone = fragment_failed(g, u, c, NULL, &fails, &off,
			    &end)) == -1)
				return -1;
		} else if (r.status == 202) {
			if (u->expires > u->saved + EXPIRY_SLACK)
				session_save(u);	/* best effort */
			if (off != -1 && (off <= low || off < u->to)) {
				/* taken, and yet asked for again, whole or in
				 * part: a session that does not move on past
				 * the fragment spends the retries */
				if (fails++ >= retries)
					return err1("%s: the upload session keeps "
					    "asking for byte %" PRId64 " again",
					    u->path, off);
				retry_nap(retry_wait(NULL, fails - 1), "the "
				    "upload session did not move on");
			} else {
				low = off;
				fails = 0;
			}
		} else if (r.status != 404 && r.status != 401 &&
		    r.status != 416 && r.status != 429 && r.status < 500)
			return graph_error(c, &r, u->path);
		else if ((gone = fragment_failed(g, u, c, &r, &fails, &off,
		    &end)) == -1)
			return -1;
		if (!gone && off >= 0)
			continue;
		if ((rc = upload_landed(g, u, last)) != 0)
			return rc == 1 ? 0 : -1;
		if (!gone)
			return err1("%s: the service has every byte but did not "
			    "commit the file", u->path);
		/* the session is gone: a new one, from byte 0 (7.3) */
		if (restarts++ >= SESSION_RESTARTS)
			return err1("%s: the upload session vanished %d times",
			    u->path, restarts);
		if (!quiet)
			fprintf(stderr, "odcp: %s: the upload session has gone; "
			    "starting again with a new one\n", u->path);
		wipe(u->url, sizeof(u->url));
		if (session_create(g, u) == -1)
			return -1;
		off = low = 0;
		end = -1;
	}
	return err1("%s: upload did not finish after %ld requests", u->path,
	    rounds);
}

static int
upload_session(struct graph *g, struct upload *u)
{
	char	 key[URL_MAX + PATH_MAX_], lock[sizeof(u->state)], *k;
	int64_t	 next = 0, end = -1;
	int	 rc, lk;

	/* OneDrive names are case-insensitive: /F/A.BIN is /f/a.bin */
	bfmt(key, sizeof(key), "%s\n%s", g->base, u->path);
	for (k = key; *k; k++)
		*k = (char)tolower((unsigned char)*k);
	state_path(g->p, u->state, sizeof(u->state), "put", key);
	bfmt(lock, sizeof(lock), "%s", u->state);  /* u->state may be dropped */
	if ((lk = state_lock(lock)) == -2)
		return err1("%s: another odcp is uploading to it", u->path);
	if (lk == -3)
		return -1;
	if ((rc = session_resume(g, u, &next, &end)) == 1) {
		if ((rc = session_create(g, u)) == 0) {
			next = 0;
			end = -1;
		}
	}
	if (rc == 0)
		rc = upload_fragments(g, u, next, end);
	else if (rc == 2)
		rc = 0;
	else
		u->keep = 1;	/* failed before sending: the state stays */
	if (rc == 0 || !u->keep) {
		if (rc == 0)
			wipe(u->url, sizeof(u->url));
		upload_forget(g, u);
	}
	wipe(u->url, sizeof(u->url));
	state_unlock(lock, lk);
	return rc;
}

/* Upload u->fd to u->path and check what the service stored. */
static int
graph_upload(struct graph *g, struct upload *u)
{
	int	 rc;

	g->what = u->path;
	if (name_check(u->path) == -1)
		return -1;
	qxh_init(&u->h);
	u->hashed = 0;
	u->qxh[0] = '\0';
	if (u->size <= SIMPLE_UPLOAD_MAX) {
		rc = upload_simple(g, u);
		if (rc == 0)
			rc = upload_mtime(g, u);
	} else
		rc = upload_session(g, u);
	if (rc == -1 || upload_hash(u) == -1)
		return -1;
	/* hashes may be missing right after an upload: one look again
	 * (7.6); none then is no error (10.3) */
	if (u->it.qxh[0] == '\0' && graph_stat(g, u->path, &u->it, G_FRESH) != 0)
		return -1;
	if (u->it.qxh[0] == '\0')
		debug(1, "%s: no quickXorHash from the service; size checked",
		    u->path);
	if (u->it.size != u->size)
		return err1("%s: service stored %" PRId64 " bytes, sent %"
		    PRId64, u->path, u->it.size, u->size);
	if (u->it.qxh[0] && strcmp(u->it.qxh, u->qxh) != 0)
		return err1("%s: quickXorHash mismatch: service %s, local %s",
		    u->path, u->it.qxh, u->qxh);
	return 0;
}

/* GET the drive: id, type, owner and quota (graph-api.md 11). */
struct drive {
	char	 id[ID_MAX];
	char	 type[FIELD_MAX];
	char	 owner[FIELD_MAX];
	char	 email[FIELD_MAX];
	char	 state[FIELD_MAX];
	int64_t	 total, used, remaining, deleted;
};

static int
parse_drive(struct json *j, struct drive *d, int depth, const char *in)
{
	enum json_ev ev;
	char	 key[64];
	int	 bad = 0;

	while (!bad && (ev = json_next(j)) == JSON_KEY) {
		strtrunc(key, sizeof(key), j->str);
		if (depth == 0 && strcmp(key, "id") == 0)
			bad = json_get_str(j, d->id, sizeof(d->id));
		else if (depth == 0 && strcmp(key, "driveType") == 0)
			bad = json_get_str(j, d->type, sizeof(d->type));
		else if ((depth == 0 && (strcmp(key, "owner") == 0 ||
		    strcmp(key, "quota") == 0)) ||
		    (depth == 1 && strcmp(in, "owner") == 0 &&
		    strcmp(key, "user") == 0)) {
			if (json_next(j) != JSON_OBJ)
				return -1;
			bad = parse_drive(j, d, depth + 1,
			    depth == 0 ? (key[0] == 'o' ? "owner" : "quota") :
			    "user");
		} else if (strcmp(in, "user") == 0 &&
		    strcmp(key, "displayName") == 0)
			bad = json_get_str(j, d->owner, sizeof(d->owner));
		else if (strcmp(in, "user") == 0 && strcmp(key, "email") == 0)
			bad = json_get_str(j, d->email, sizeof(d->email));
		else if (strcmp(in, "quota") == 0 && strcmp(key, "total") == 0)
			bad = json_get_int(j, &d->total);
		else if (strcmp(in, "quota") == 0 && strcmp(key, "used") == 0)
			bad = json_get_int(j, &d->used);
		else if (strcmp(in, "quota") == 0 &&
		    strcmp(key, "remaining") == 0)
			bad = json_get_int(j, &d->remaining);
		else if (strcmp(in, "quota") == 0 &&
		    strcmp(key, "deleted") == 0)
			bad = json_get_int(j, &d->deleted);
		else if (strcmp(in, "quota") == 0 && strcmp(key, "state") == 0)
			bad = json_get_str(j, d->state, sizeof(d->state));
		else
			bad = json_skip(j);
	}
	return bad || ev != JSON_OBJ_END ? -1 : 0;
}

static int
graph_drive(struct graph *g, struct drive *d)
{
	static struct json j;
	struct http_req q;
	struct http_resp r;
	struct conn *c;
	struct body b;
	int	 attempt = 0, rc;

	g->what = NULL;

	do {
		memset(d, 0, sizeof(*d));
		req_init(&q, "GET");
		if (graph_request(g, g->base, &q, &r, &c, G_AUTH |
		    G_IDEMPOTENT) == -1)
			return -1;
		if (r.status != 200)
			return graph_error(c, &r, "drive");
		b.c = c;
		b.r = &r;
		b.got = 0;
		hush = 1;
		body_broke = 0;
		json_init(&j, body_read, &b);
		rc = body_end(&b, &j, json_next(&j) != JSON_OBJ ||
		    parse_drive(&j, d, 0, "") == -1 ||
		    json_next(&j) != JSON_END, "drive reply");
		hush = 0;
	} while (rc == -1 && graph_again(&attempt));
	return rc;
}

/* == 12. Commands ========================================================= */

/*
 * One function per command, each a short script of §11 calls.  Results
 * go to stdout, diagnostics to stderr.  Commands that walk a tree keep a
 * queue of work in an unlinked temporary file, so memory stays flat for
 * any number of items.  A multi-item job goes on after a failed item and
 * ends with EXIT_PARTIAL.
 */
static struct profile P;
static struct token T;
static struct graph G;

struct job {
	long	 ok, failed;
};

static void
job_end(struct job *jb, int rc)
{
	if (rc == 0)
		jb->ok++;
	else
		jb->failed++;
}

/* A job where some items failed and some worked is partial; where all
 * failed, the status is the last failure's own. */
static int
job_status(const struct job *jb)
{
	if (jb->failed == 0)
		return 0;
	if (jb->ok > 0)
		exit_status = EXIT_PARTIAL;
	return -1;
}

/* Commands without long options still reject "--bogus" by name. */
static const struct option no_long[] = { { NULL, 0, NULL, 0 } };

/*
 * A command line a command cannot use: one line saying what is wrong and
 * how the command is written.  ch is what getopt returned ('?' for an
 * unknown option), or 0 when the operands are wrong.
 */
static int
cmd_usage(const char *usage, int ch, int argc, char **argv)
{
	int	 i;

	if (ch == '?' && optopt != 0 && optopt != '-')
		return fail(EXIT_USAGE, "unknown option -%c; usage: odcp %s "
		    "(global options go before the command)", optopt, usage);
	if (ch == '?')
		return fail(EXIT_USAGE, "unknown option %s; usage: odcp %s",
		    argv[optind - 1], usage);
	for (i = optind; i < argc; i++)
		if (argv[i][0] == '-' && argv[i][1] != '\0')
			return fail(EXIT_USAGE, "%s: options go before operands; "
			    "usage: odcp %s", argv[i], usage);
	return fail(EXIT_USAGE, "usage: odcp %s", usage);
}

/* For a command that takes no options: reject any, by name. */
static int
cmd_no_options(const char *usage, int argc, char **argv)
{
	int	 ch;

	if ((ch = getopt_long(argc, argv, "+", no_long, NULL)) != -1)
		return cmd_usage(usage, ch, argc, argv);
	return 0;
}

static char
item_char(const struct item *it)
{
	return it->type == ITEM_FOLDER ? 'd' : it->type == ITEM_PACKAGE ?
	    'p' : '-';
}

/* "2024-01-02T03:04:05.123Z" -> "2024-01-02T03:04:05Z" */
static void
item_time(const char *in, char *out, size_t sz)
{
	int64_t	 t;

	if (time_parse(in, &t) == 0)
		time_format(out, sz, t);
	else
		bfmt(out, sz, "-");
}

/* One queue record: kind, size, mtime, hash, path, separators. */
#define QUEUE_REC_MAX	(PATH_MAX_ + 2 * FIELD_MAX + 64)

/*
 * The work queue of the tree walks: an unlinked temporary file read
 * from *pos while new records are appended at its end.  queue_next()
 * returns 0 with a record, 1 at the end, -1 (reported) on an error.  It lives in
 * $TMPDIR, /tmp, or (a FROM scratch container has neither) the
 * configuration directory.
 */
static FILE *
queue_open(void)
{
	const char *dirs[3];
	char	 path[LPATH_MAX + 32];
	FILE	*q;
	int	 i, fd;

	dirs[0] = getenv("TMPDIR");
	dirs[1] = "/tmp";
	dirs[2] = P.dir;
	for (i = 0; i < 3; i++) {
		if (dirs[i] == NULL || *dirs[i] == '\0' || snprintf(path,
		    sizeof(path), "%s/.odcp-queue.XXXXXX", dirs[i]) >=
		    (int)sizeof(path))
			continue;
		if (i == 2 && mkdir_parents(P.dir) == -1)
			continue;
		if ((fd = mkstemp(path)) == -1)
			continue;
		unlink(path);
		if ((q = fdopen(fd, "w+")) != NULL)
			return q;
		close(fd);
	}
	err1("no writable directory for a temporary file (set TMPDIR)");
	return NULL;
}

static int
queue_next(FILE *q, long *pos, char *rec, size_t sz)
{
	size_t	 n;

	/* records that did not reach the file (a full disk) are lost:
	 * that must stop the walk, not skip files silently */
	if (fflush(q) != 0 || ferror(q))
		return err1("temporary queue file: write error:");
	if (fseek(q, *pos, SEEK_SET) != 0)
		return err1("temporary queue file:");
	if (fgets(rec, (int)sz, q) == NULL)
		return ferror(q) ? err1("temporary queue file:") : 1;
	*pos = ftell(q);
	if ((n = strlen(rec)) == 0 || rec[n - 1] != '\n')
		return err1("temporary queue file damaged");
	rec[n - 1] = '\0';
	return 0;
}

/* The next tab-separated field of a queue record. */
static char *
queue_field(char **p)
{
	char	*f = *p, *t;

	if (f == NULL)
		return "";
	if ((t = strchr(f, '\t')) != NULL) {
		*t = '\0';
		*p = t + 1;
	} else
		*p = NULL;
	return f;
}

/* ------------------------------------------------------------ ls, stat */

struct ls {
	int	 longfmt, recurse;
	int	 failed;		/* a folder could not be listed */
	size_t	 rootlen;		/* of the path listed */
	const char *prefix;		/* relative path of the folder listed */
	FILE	*queue;			/* folders still to list (-R) */
};

static int
ls_print(const struct item *it, void *arg)
{
	struct ls *l = arg;
	char	 when[FIELD_MAX];
	const char *slash = it->type == ITEM_FOLDER ? "/" : "";

	if (l->longfmt) {
		item_time(it->modified, when, sizeof(when));
		printf("%c %12" PRId64 " %s %s%s%s\n", item_char(it), it->size,
		    when, l->prefix, it->name, slash);
	} else
		printf("%s%s%s\n", l->prefix, it->name, slash);
	if (!l->recurse || it->type != ITEM_FOLDER)
		return 0;
	/* the folder's own path, l->root/prefix/name, must fit to be listed */
	if (l->rootlen + strlen(l->prefix) + strlen(it->name) + 2 >= PATH_MAX_) {
		l->failed = err1("%s%s: remote path too long to list", l->prefix,
		    it->name);
		return 0;
	}
	fprintf(l->queue, "%s%s/\n", l->prefix, it->name);
	return 0;
}

static const char ls_usage[] = "ls [-lR] [PATH]";

static int
cmd_ls(int argc, char **argv)
{
	static char path[PATH_MAX_], sub[PATH_MAX_], rel[QUEUE_REC_MAX];
	static struct item it;
	struct ls l;
	int	 ch, rc = 0;
	long	 qpos;

	memset(&l, 0, sizeof(l));
	while ((ch = getopt_long(argc, argv, "+lR", no_long, NULL)) != -1) {
		if (ch == 'l')
			l.longfmt = 1;
		else if (ch == 'R')
			l.recurse = 1;
		else
			return cmd_usage(ls_usage, ch, argc, argv);
	}
	if (argc - optind > 1)
		return cmd_usage(ls_usage, 0, argc, argv);
	if (path_norm(path, sizeof(path), optind < argc ? argv[optind] : "/")
	    == -1 || graph_stat(&G, path, &it, 0) != 0)
		return -1;
	l.prefix = "";
	l.rootlen = strlen(path);
	if (it.type != ITEM_FOLDER)
		return ls_print(&it, &l);
	if (l.recurse && (l.queue = queue_open()) == NULL)
		return -1;
	rel[0] = '\0';
	for (qpos = 0;;) {
		l.prefix = rel;
		bfmt(sub, sizeof(sub), "%s%s%s", path,
		    strcmp(path, "/") && rel[0] ? "/" : "", rel);
		if (rel[0] && sub[strlen(sub) - 1] == '/')
			sub[strlen(sub) - 1] = '\0';
		if (l.recurse)
			fseek(l.queue, 0, SEEK_END);
		if ((rc = graph_list(&G, sub, ls_print, &l)) != 0 || !l.recurse)
			break;
		if ((rc = queue_next(l.queue, &qpos, rel, sizeof(rel))) != 0) {
			rc = rc == 1 ? 0 : -1;
			break;
		}
	}
	if (l.queue != NULL)
		fclose(l.queue);
	return rc != 0 ? rc : l.failed;
}

static const char stat_usage[] = "stat PATH";

static int
cmd_stat(int argc, char **argv)
{
	static char path[PATH_MAX_];
	static struct item it;
	char	 when[FIELD_MAX];
	static const char *types[] = { "unknown", "file", "folder", "package" };

	if (cmd_no_options(stat_usage, argc, argv) == -1)
		return -1;
	if (argc - optind != 1)
		return cmd_usage(stat_usage, 0, argc, argv);
	if (path_norm(path, sizeof(path), argv[optind]) == -1 ||
	    graph_stat(&G, path, &it, 0) != 0)
		return -1;
	printf("path: %s\nid: %s\ntype: %s\nsize: %" PRId64 "\n", path, it.id,
	    types[it.type], it.size);
	item_time(it.created, when, sizeof(when));
	printf("created: %s\n", when);
	item_time(it.modified, when, sizeof(when));
	printf("modified: %s\n", when);
	if (it.type == ITEM_FILE)
		printf("quickXorHash: %s\nmimeType: %s\n",
		    it.qxh[0] ? it.qxh : "-", it.mime[0] ? it.mime : "-");
	if (it.type == ITEM_FOLDER && it.children >= 0)
		printf("children: %" PRId64 "\n", it.children);
	printf("eTag: %s\n", it.etag[0] ? it.etag : "-");
	return 0;
}

/* ------------------------------------------------------------------ get */

/*
 * The canonical absolute name of a local file that may not exist yet,
 * however it is spelt (f, ./f, d/../f): realpath() of it, else of its
 * folder with its own name after; else the name as given.
 */
static int
local_canon(const char *target, int follow, char *dst, size_t dsz)
{
	char	 dir[LPATH_MAX], real[LPATH_MAX];	/* realpath: PATH_MAX */

	/* the last name is followed only if it was a link when checked
	 * (follow, from link_check): one planted since is replaced by the
	 * rename, not followed */
	if (follow && realpath(target, real) != NULL)
		return snprintf(dst, dsz, "%s", real) < (int)dsz ? 0 : -1;
	dir_name(target, dir, sizeof(dir));
	if (realpath(dir, real) != NULL)
		return snprintf(dst, dsz, "%s%s%s", real, strcmp(real, "/") ?
		    "/" : "", base_name(target)) < (int)dsz ? 0 : -1;
	return snprintf(dst, dsz, "%s", target) < (int)dsz ? 0 : -1;
}

/*
 * A symbolic link (lstat in l) planted by another user in a sticky
 * world-writable directory such as /tmp is never followed: the kernel's
 * protected_symlinks rule, applied here whether the kernel has it on or
 * not.  -1 (reported) for such a link.
 */
static int
link_planted(const char *target, const struct stat *l)
{
	char	 dir[LPATH_MAX];
	struct stat d;

	dir_name(target, dir, sizeof(dir));
	if (stat(dir, &d) == 0 && (d.st_mode & S_ISVTX) &&
	    (d.st_mode & S_IWOTH) && l->st_uid != geteuid() &&
	    l->st_uid != d.st_uid)
		return err1("%s: a symbolic link of another user in a sticky "
		    "directory: not written through", target);
	return 0;
}

/*
 * A target that is a symbolic link is written through only as cp could:
 * not planted (link_planted), not dangling (GNU cp refuses), and a file
 * it names open for writing to us.  1: a link that may be written
 * through; 0: no link; -1 (reported): one that may not.
 */
static int
link_check(const char *target)
{
	struct stat l, t;
	int	 fd;

	if (lstat(target, &l) == -1 || !S_ISLNK(l.st_mode))
		return 0;
	if (link_planted(target, &l) == -1)
		return -1;
	if (stat(target, &t) == -1)
		return err1(errno == ENOENT ? "%s: not writing through a "
		    "dangling symbolic link" : "%s:", target);
	if (S_ISREG(t.st_mode)) {	/* (a FIFO is not opened here) */
		if ((fd = open(target, O_WRONLY | O_NONBLOCK | O_NOCTTY)) == -1)
			return err1("%s:", target);
		close(fd);
	}
	return 1;
}

/*
 * Where get writes.  A regular file (new or existing, also through a
 * symbolic link) is written as a partial file beside it, ".NAME.odcp-part",
 * renamed over it only when verified.  "-", a device or a FIFO is written
 * directly, as cp would: there is nothing to rename.  Returns the
 * descriptor; *part is set to the partial file's name ("" when writing
 * directly) and *dst to the name the file takes.
 */
static int
get_open(const char *target, char *part, size_t psz, char *dst, size_t dsz)
{
	struct stat st;
	const char *slash, *base;
	int	 fd, n, follow, cut;

	part[0] = '\0';
	if (strcmp(target, "-") == 0)
		return STDOUT_FILENO;
	/* through a symbolic link to what it names, as cp does, and only
	 * where cp could write through it */
	if ((follow = link_check(target)) == -1)
		return -1;
	if (stat(target, &st) == 0 && !S_ISREG(st.st_mode)) {
		if (S_ISDIR(st.st_mode))
			return err1("%s: is a directory", target);
		if ((fd = open(target, O_WRONLY | O_TRUNC)) == -1)
			return err1("%s:", target);
		return fd;
	}
	/* a canonical name, so that the state file finds it again */
	if (local_canon(target, follow, dst, dsz) == -1)
		return err1("%s: local path too long", target);
	slash = strrchr(dst, '/');
	base = slash ? slash + 1 : dst;
	/* a name near the 255-byte limit keeps its start and a hash of it */
	if (strlen(base) + sizeof(".odcp-part") + 1 <= PART_NAME_MAX)
		n = snprintf(part, psz, "%.*s.%s.odcp-part", (int)(base - dst),
		    dst, base);
	else {
		/* 200 bytes or a little less: never half a UTF-8 character */
		for (cut = 200; cut > 0 && (base[cut] & 0xC0) == 0x80; cut--)
			;
		n = snprintf(part, psz, "%.*s.%.*s~%016" PRIx64 ".odcp-part",
		    (int)(base - dst), dst, cut, base, fnv1a(base));
	}
	if (n < 0 || n >= (int)psz) {
		part[0] = '\0';
		return err1("%s: local path too long", target);
	}
	return -2;
}

/*
 * Open the partial file, or make it (mode 0600, *made), and lock it: one
 * odcp at a time writes it, and a second one started on the same target
 * stops at once, touching nothing.  *st gets what it is.
 */
static int
part_open(const char *part, struct stat *st, int *made)
{
	int	 fd, tries, rc;

	for (tries = 0; tries < 3; tries++) {
		*made = 0;
		if ((fd = open(part, O_RDWR | O_NOFOLLOW | O_NONBLOCK)) == -1 &&
		    errno == ENOENT) {
			fd = open(part, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW |
			    O_NONBLOCK, 0600);
			*made = 1;
			if (fd == -1 && errno == EEXIST)
				continue;
		}
		if (fd == -1)
			return err1("%s:", part);
		if (fstat(fd, st) == -1 || !S_ISREG(st->st_mode) ||
		    st->st_uid != geteuid()) {
			close(fd);
			return err1("%s: not a partial file of this user", part);
		}
		if ((rc = lock_named(fd, part)) == 0)
			return fd;
		if (rc == -1)
			return err1("%s: another odcp is downloading into it",
			    part);
	}
	return err1("%s: changed while being opened", part);
}

static char owner[48];		/* this run, in the state files it writes */

/*
 * Open the partial file (part_open).  It must be the one the state file
 * claims (a file of that name that odcp did not make, perhaps downloaded
 * by get -r, is left alone), and have no other hard link (a snapshot's
 * link would be written through: it starts afresh).  It is resumed if
 * the claim is for this very version of the item (same cTag, or eTag,
 * and size), else started empty.  *have gets its length; its bytes are
 * hashed.  A state file that cannot be used is said once and left alone
 * (state[0] = 0).
 */
static int
get_part(const char *remote, const struct item *it, const char *part,
    char *state, struct qxh *h, int64_t *have)
{
	static char text[STATE_MAX], buf[IO_BUF];
	char	 v[PATH_MAX_ + 64], want[FIELD_MAX + 32], claim[STATE_MAX];
	struct stat st;
	ssize_t	 n;
	int	 fd, rc, made, was, exists, resume = 0;

	*have = 0;
	qxh_init(h);
	if (owner[0] == '\0')
		bfmt(owner, sizeof(owner), "%ld.%lld.%d", (long)getpid(),
		    (long long)time(NULL), rand());
	bfmt(want, sizeof(want), "%" PRId64 " %s", it->size,
	    it->ctag[0] ? it->ctag : it->etag);
	bfmt(claim, sizeof(claim), "# odcp partial download\nremote=%s\n"
	    "version=%s\npart=%s\nowner=%s\n", remote, want, part, owner);
	/* the claim is written before the file is made, so that no crash
	 * and no second odcp ever finds the file made but unclaimed */
	if (!(exists = lstat(part, &st) == 0) && state_save(state, claim) == -1)
		state[0] = '\0';
	if ((fd = part_open(part, &st, &made)) == -1)
		return -1;
	was = silent;		/* one line: the error below says it all */
	silent = exists;
	rc = state_load(state, text, sizeof(text));	/* under the lock */
	silent = was;
	if (rc == -1)
		state[0] = '\0';
	if (rc == 0)
		state_get(text, "part", v, sizeof(v));
	if (!made && (rc != 0 || strcmp(v, part) != 0)) {
		close(fd);
		return err1("%s: in the way of the partial download, and not "
		    "odcp's%s: left alone (move it, or get to another name)",
		    part, rc == -1 ? " as far as the state file can tell" : "");
	}
	if (!made && st.st_nlink != 1) {
		debug(1, "%s: has another hard link: starting afresh", part);
		unlink(part);
		close(fd);
		if ((fd = part_open(part, &st, &made)) == -1)
			return -1;
		rc = 1;
	}
	if (rc == 0) {
		state_get(text, "remote", v, sizeof(v));
		resume = strcmp(v, remote) == 0;
		state_get(text, "version", v, sizeof(v));
		if (resume && (strcmp(v, want) != 0 ||
		    (it->ctag[0] == '\0' && it->etag[0] == '\0'))) {
			resume = 0;
			if (!quiet)
				fprintf(stderr, "odcp: %s: the remote file has "
				    "changed since the interrupted download; "
				    "starting again\n", remote);
		}
	}
	if (resume && st.st_size > 0 && st.st_size <= it->size) {
		while (*have < st.st_size) {
			if ((n = pread_full(fd, buf, sizeof(buf),
			    (off_t)*have)) <= 0) {
				close(fd);
				return err1("%s: read:", part);
			}
			qxh_update(h, (unsigned char *)buf, (size_t)n);
			*have += n;
		}
		if (!quiet)
			fprintf(stderr, "odcp: %s: resuming the interrupted "
			    "download at byte %" PRId64 " of %" PRId64 "\n",
			    remote, *have, it->size);
	} else if (ftruncate(fd, 0) == -1) {
		close(fd);
		return err1("%s:", part);
	}
	if (lseek(fd, (off_t)*have, SEEK_SET) == -1) {
		close(fd);
		return err1("%s:", part);
	}
	/* this run's claim, so that its end removes only its own state (a
	 * lost state file costs only the resume) */
	if (state[0] && state_save(state, claim) == -1)
		state[0] = '\0';
	return fd;
}

/* Remove the state file if it is still this run's claim. */
static void
get_unclaim(const char *state)
{
	static char text[STATE_MAX];
	char	 v[sizeof(owner)];
	int	 was = silent;

	silent = 1;
	if (state[0] && state_load(state, text, sizeof(text)) == 0) {
		state_get(text, "owner", v, sizeof(v));
		if (strcmp(v, owner) == 0)
			unlink(state);
	}
	silent = was;
}

/*
 * Download one file to target and verify its size and quickXorHash.
 * The partial file goes only when nothing came or the bytes failed the
 * check; after any other failure it stays for a rerun to resume.
 */
static int
get_file(const char *remote, const struct item *it, const char *target)
{
	static char part[LPATH_MAX + 64], dst[LPATH_MAX];
	static char state[LPATH_MAX + 128];
	struct timespec ts[2];
	struct qxh h;
	char	 sum[29];
	int64_t	 have = 0, mt;
	int	 fd, rc = -1, bad = 0;
	mode_t	 um;

	if ((fd = get_open(target, part, sizeof(part), dst, sizeof(dst))) == -1)
		return -1;
	qxh_init(&h);
	if (part[0]) {
		state_path(&P, state, sizeof(state), "get", dst);
		if ((fd = get_part(remote, it, part, state, &h, &have)) == -1)
			return -1;
	}
	if (graph_download(&G, remote, it->size, fd, part[0] == '\0' ? 0 :
	    state[0] ? 2 : 1, &h, &have) == -1)
		goto out;
	qxh_final(&h, sum);
	bad = 1;
	if (have != it->size) {
		err1("%s: received %" PRId64 " bytes, expected %" PRId64,
		    remote, have, it->size);
		goto out;
	}
	if (it->qxh[0] && strcmp(sum, it->qxh) != 0) {
		err1("%s: quickXorHash mismatch: service %s, received %s",
		    remote, it->qxh, sum);
		goto out;
	}
	bad = 0;
	if (!it->qxh[0])
		debug(1, "%s: no quickXorHash from the service; size checked",
		    remote);
	if (part[0] == '\0') {
		rc = 0;
		debug(1, "%s -> %s (%" PRId64 " bytes)", remote, target, have);
		goto out;
	}
	um = umask(0);
	umask(um);
	if (fchmod(fd, 0666 & ~um) == -1 || fsync(fd) == -1) {
		err1("%s:", part);
		goto out;
	}
	if (time_parse(it->modified, &mt) == 0) {
		ts[0].tv_sec = ts[1].tv_sec = (time_t)mt;
		ts[0].tv_nsec = ts[1].tv_nsec = 0;
		futimens(fd, ts);
	}
	/* renamed while still open, so still locked: no other odcp can
	 * write into the file now under the target's name */
	if (rename(part, dst) == -1) {
		err1("%s:", dst);
		goto out;
	}
	get_unclaim(state);
	rc = 0;
	debug(1, "%s -> %s (%" PRId64 " bytes)", remote, target, have);
out:
	/* removed while still locked, so never from under another odcp */
	if (rc == -1 && part[0] && fd >= 0 && (have == 0 || bad ||
	    !state[0])) {
		unlink(part);
		get_unclaim(state);
	}
	if (fd >= 0 && fd != STDOUT_FILENO && close(fd) == -1 && rc == 0)
		rc = err1("%s:", target);
	return rc;
}

/* Queue records for the tree walks: "D\tpath", "P\tpath" or
 * "F\tsize\tmtime\thash\ttag\tpath". */
struct tree {
	FILE	*q;
	const char *dir;		/* the folder being listed */
};

static int
tree_queue(const struct item *it, void *arg)
{
	FILE	*q = ((struct tree *)arg)->q;
	const char *dir = ((struct tree *)arg)->dir;

	/* names were checked by item_check(); the whole path must fit */
	if (strlen(dir) + 1 + strlen(it->name) >= PATH_MAX_)
		return err1("%s/%s: remote path too long", dir, it->name);
	if (it->type == ITEM_FOLDER)
		fprintf(q, "D\t%s%s%s\n", dir, strcmp(dir, "/") ? "/" : "",
		    it->name);
	else if (it->type == ITEM_FILE)
		fprintf(q, "F\t%" PRId64 "\t%s\t%s\t%s\t%s%s%s\n", it->size,
		    it->modified[0] ? it->modified : "-",
		    it->qxh[0] ? it->qxh : "-", it->ctag[0] ? it->ctag :
		    it->etag[0] ? it->etag : "-", dir,
		    strcmp(dir, "/") ? "/" : "", it->name);
	else
		fprintf(q, "P\t%s%s%s\n", dir, strcmp(dir, "/") ? "/" : "",
		    it->name);
	return 0;
}

/* Download the folder remote into the local directory local. */
static int
get_tree(const char *remote, const char *local)
{
	static char rec[QUEUE_REC_MAX], lpath[LPATH_MAX];
	static struct item it;
	struct tree tr;
	struct stat st;
	struct job jb = { 0, 0 };
	char	*p, kind, *size = NULL, *mtime = NULL, *hash = NULL, *tag = NULL;
	FILE	*q;
	long	 qpos = 0;
	int	 rc;
	size_t	 rootlen = strcmp(remote, "/") ? strlen(remote) : 0;

	if ((q = queue_open()) == NULL)
		return -1;
	fprintf(q, "D\t%s\n", remote);
	while ((rc = queue_next(q, &qpos, rec, sizeof(rec))) == 0) {
		kind = rec[0];
		p = rec + 2;
		if (kind == 'F') {
			size = queue_field(&p);
			mtime = queue_field(&p);
			hash = queue_field(&p);
			tag = queue_field(&p);
		}
		if ((kind != 'D' && kind != 'F' && kind != 'P') || rec[1] != '\t')
			BUG("queue record");
		if (p == NULL || snprintf(lpath, sizeof(lpath), "%s%s", local,
		    p + (strlen(p) >= rootlen ? rootlen : 0)) >=
		    (int)sizeof(lpath)) {
			job_end(&jb, err1("%s: local path too long", p ? p : ""));
			continue;
		}
		if (kind == 'P') {
			job_end(&jb, err1("%s: OneNote notebooks cannot be "
			    "downloaded; skipped", p));
			continue;
		}
		if (kind == 'D') {
			if (mkdir(lpath, 0777) == -1 && errno != EEXIST) {
				job_end(&jb, err1("%s:", lpath));
				continue;
			}
			/* as cp -r: a link where a folder goes is not gone
			 * into, but the target named may be one (not planted) */
			if (lstat(lpath, &st) == -1)
				rc = err1("%s:", lpath);
			else if (S_ISLNK(st.st_mode) && strcmp(p, remote) != 0)
				rc = err1("%s: a symbolic link where a folder "
				    "goes: not gone into", lpath);
			else if (S_ISLNK(st.st_mode))
				rc = link_planted(lpath, &st);
			if (rc == -1) {
				job_end(&jb, -1);
				rc = 0;
				continue;
			}
			tr.q = q;
			tr.dir = p;
			fseek(q, 0, SEEK_END);
			if ((rc = graph_list(&G, p, tree_queue, &tr)) != 0)
				job_end(&jb, rc);
			continue;
		}
		memset(&it, 0, sizeof(it));
		it.type = ITEM_FILE;
		if (parse_int(size, 0, INT64_MAX, &it.size) == -1)
			BUG("queue record");
		if (strcmp(mtime, "-") != 0)
			scopy(it.modified, sizeof(it.modified), mtime);
		if (strcmp(hash, "-") != 0)
			scopy(it.qxh, sizeof(it.qxh), hash);
		if (strcmp(tag, "-") != 0)
			scopy(it.ctag, sizeof(it.ctag), tag);
		rc = get_file(p, &it, lpath);
		job_end(&jb, rc);
	}
	if (rc == -1)
		job_end(&jb, -1);
	fclose(q);
	return job_status(&jb);
}

static const char get_usage[] = "get [-r] REMOTE [LOCAL|-]";

static int
cmd_get(int argc, char **argv)
{
	static char path[PATH_MAX_], target[LPATH_MAX];
	static struct item it;
	struct stat st;
	int	 ch, recurse = 0, n;
	const char *local;

	while ((ch = getopt_long(argc, argv, "+r", no_long, NULL)) != -1) {
		if (ch != 'r')
			return cmd_usage(get_usage, ch, argc, argv);
		recurse = 1;
	}
	if (argc - optind < 1 || argc - optind > 2)
		return cmd_usage(get_usage, 0, argc, argv);
	if (optind + 1 < argc && argv[optind + 1][0] == '\0')
		return fail(EXIT_USAGE, "empty local path: use . for here");
	state_prune(&P);
	if (path_norm(path, sizeof(path), argv[optind]) == -1 ||
	    graph_stat(&G, path, &it, 0) != 0)
		return -1;
	local = optind + 1 < argc ? argv[optind + 1] : NULL;
	if (it.type == ITEM_PACKAGE)
		return err1("%s: OneNote notebooks cannot be downloaded", path);
	if (it.type == ITEM_FOLDER && !recurse)
		return fail(EXIT_USAGE, "%s is a folder: use get -r", path);
	if (local != NULL && strcmp(local, "-") == 0) {
		if (it.type == ITEM_FOLDER)
			return fail(EXIT_USAGE, "cannot write a folder to stdout");
		return get_file(path, &it, "-");
	}
	/* a directory named through a link is gone into, unless planted */
	if (local != NULL && lstat(local, &st) == 0 && S_ISLNK(st.st_mode) &&
	    link_planted(local, &st) == -1)
		return -1;
	if (local == NULL)
		n = snprintf(target, sizeof(target), "%s", it.root ? "root" :
		    base_name(path));
	else if (stat(local, &st) == 0 && S_ISDIR(st.st_mode))
		n = snprintf(target, sizeof(target), "%s%s%s", local,
		    local[strlen(local) - 1] == '/' ? "" : "/",
		    it.root ? "root" : base_name(path));
	else if (local[strlen(local) - 1] == '/' && it.type != ITEM_FOLDER)
		return err1(errno == ENOENT ? "%s: no such directory" : "%s:",
		    local);
	else
		n = snprintf(target, sizeof(target), "%s", local);
	if (n < 0 || n >= (int)sizeof(target))
		return fail(EXIT_USAGE, "%.60s...: local path too long", local);
	if (it.type == ITEM_FOLDER)
		return get_tree(path, target);
	return get_file(path, &it, target);
}

/* ------------------------------------------------------------------ put */

static const char *put_conflict = "replace";
static int64_t put_fragment;

static int
put_file(const char *local, const char *remote)
{
	static char path[PATH_MAX_];
	struct upload u;
	struct stat st;
	int	 rc;

	if (path_norm(path, sizeof(path), remote) == -1)
		return -1;
	memset(&u, 0, sizeof(u));
	u.path = path;
	u.conflict = put_conflict;
	u.fragment = put_fragment ? put_fragment : P.fragment;
	/* O_NONBLOCK: opening a FIFO must not wait for a writer */
	if ((u.fd = open(local, O_RDONLY | O_NONBLOCK)) == -1)
		return fail(errno == ENOENT ? EXIT_NOTFOUND : EXIT_FAIL,
		    "%s:", local);
	if (fstat(u.fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		close(u.fd);
		return err1("%s: not a regular file", local);
	}
	fcntl(u.fd, F_SETFL, fcntl(u.fd, F_GETFL) & ~O_NONBLOCK);
	u.size = st.st_size;
	u.mtime = st.st_mtime;
	/* the change time too: no write leaves it, and touch cannot set it */
	bfmt(u.ident, sizeof(u.ident), "%" PRId64 " %" PRId64 ".%09ld %" PRId64
	    ".%09ld %" PRIu64, u.size, (int64_t)st.st_mtim.tv_sec,
	    (long)st.st_mtim.tv_nsec, (int64_t)st.st_ctim.tv_sec,
	    (long)st.st_ctim.tv_nsec, (uint64_t)st.st_ino);
	rc = graph_upload(&G, &u);
	close(u.fd);
	if (rc == 0 && strcmp(u.it.name, base_name(path)) != 0 &&
	    strcmp(put_conflict, "rename") == 0 && !quiet)
		fprintf(stderr, "odcp: %s exists: stored as %s\n", path,
		    u.it.name);
	if (rc == 0)
		debug(1, "%s -> %.*s%s (%" PRId64 " bytes)", local,
		    (int)(base_name(path) - path), path, u.it.name, u.size);
	return rc;
}

/*
 * mkdir -p: each missing folder of path, top down.  missing: the caller
 * has just seen path answer 404, so it is not asked again.
 */
static int
mkdir_p(const char *path, int missing)
{
	static struct item it;
	char	 parent[PATH_MAX_];
	const char *b = base_name(path);
	int	 rc;

	if (strcmp(path, "/") == 0)
		return 0;
	if (!missing && (rc = graph_stat(&G, path, &it, G_MISSING_OK)) != 1) {
		if (rc == -1)
			return -1;
		return it.type == ITEM_FOLDER ? 0 :
		    fail(EXIT_EXISTS, "%s exists and is not a folder", path);
	}
	bfmt(parent, sizeof(parent), "%.*s", (int)(b - path - 1), path);
	if (parent[0] && mkdir_p(parent, 0) == -1)
		return -1;
	return graph_mkdir(&G, path, &it, 1);
}

/* Upload the local directory dir as the remote folder remote. */
static int
put_tree(char *lpath, size_t lsz, char *rpath, size_t rsz, int depth,
    struct job *jb)
{
	static struct item it;
	struct dirent *de;
	struct stat st;
	size_t	 ll = strlen(lpath), rl = strlen(rpath);
	DIR	*d;

	if (depth > TREE_DEPTH_MAX)
		return err1("%s: folders nested too deep", lpath);
	if ((d = opendir(lpath)) == NULL)
		return err1("%s:", lpath);
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (snprintf(lpath + ll, lsz - ll, "/%s", de->d_name) >=
		    (int)(lsz - ll) || snprintf(rpath + rl, rsz - rl, "%s%s",
		    rl > 1 ? "/" : "", de->d_name) >= (int)(rsz - rl)) {
			lpath[ll] = rpath[rl] = '\0';
			job_end(jb, err1("%s/%s: path too long", lpath,
			    de->d_name));
			continue;
		}
		if (stat(lpath, &st) == -1)
			job_end(jb, err1("%s:", lpath));
		else if (S_ISREG(st.st_mode))
			job_end(jb, put_file(lpath, rpath));
		else if (!S_ISDIR(st.st_mode))
			job_end(jb, err1("%s: not a regular file or folder; "
			    "skipped", lpath));
		else if (lstat(lpath, &st) == 0 && S_ISLNK(st.st_mode))
			job_end(jb, err1("%s: symbolic link to a folder; "
			    "skipped", lpath));
		else if (graph_mkdir(&G, rpath, &it, 1) == -1 ||
		    put_tree(lpath, lsz, rpath, rsz, depth + 1, jb) == -1)
			job_end(jb, -1);
		lpath[ll] = rpath[rl] = '\0';
	}
	closedir(d);
	return 0;
}

/*
 * Where put sends lpath, like cp: into an existing folder, or into a
 * folder named with a trailing '/' (created if missing), or to a new
 * name, whose folders are created as mkdir -p would.  *missing: rpath
 * itself was just seen not to exist.
 */
static int
put_target(const char *lpath, const char *remote, char *rpath, size_t rsz,
    int *missing)
{
	static char norm[PATH_MAX_];
	static struct item it;
	const char *b = base_name(lpath);
	int	 rc, into = remote[strlen(remote) - 1] == '/';

	*missing = 0;
	if (path_norm(norm, sizeof(norm), remote) == -1 ||
	    (rc = graph_stat(&G, norm, &it, G_MISSING_OK)) == -1)
		return -1;
	if (into && rc == 0 && it.type != ITEM_FOLDER)
		return fail(EXIT_EXISTS, "%s is a file, not a folder", norm);
	if ((rc == 0 && it.type == ITEM_FOLDER) || into) {
		if (strcmp(b, "..") == 0 || strcmp(b, ".") == 0)
			return fail(EXIT_USAGE, "%s: name the remote folder",
			    lpath);
		if (snprintf(rpath, rsz, "%s%s%s", norm, strcmp(norm, "/") ?
		    "/" : "", b) >= (int)rsz)
			return fail(EXIT_USAGE, "%s: remote path too long", lpath);
		return rc == 1 ? mkdir_p(norm, 1) : 0;
	}
	*missing = rc == 1;
	bfmt(rpath, rsz, "%s", norm);
	bfmt(norm, sizeof(norm), "%.*s", (int)(base_name(rpath) - rpath - 1),
	    rpath);
	return *missing && norm[0] ? mkdir_p(norm, 0) : 0;
}

static const char put_usage[] = "put [-r] [--conflict fail|replace|rename] "
    "[--fragment-size N] LOCAL [REMOTE]";

static int
cmd_put(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "conflict", required_argument, NULL, 'C' },
		{ "fragment-size", required_argument, NULL, 'F' },
		{ NULL, 0, NULL, 0 }
	};
	static char lpath[LPATH_MAX], rpath[PATH_MAX_];
	struct stat st;
	struct job jb = { 0, 0 };
	const char *local, *remote;
	int	 ch, recurse = 0, missing;
	int64_t	 v;
	size_t	 n;

	while ((ch = getopt_long(argc, argv, "+r", opts, NULL)) != -1) {
		if (ch == 'r')
			recurse = 1;
		else if (ch == 'C' && (strcmp(optarg, "fail") == 0 ||
		    strcmp(optarg, "replace") == 0 ||
		    strcmp(optarg, "rename") == 0))
			put_conflict = optarg;
		else if (ch == 'F' && parse_int(optarg, 1, INT64_MAX, &v) == 0 &&
		    v % FRAGMENT_UNIT == 0 && v < FRAGMENT_LIMIT)
			put_fragment = v;
		else if (ch == 'F')
			return fail(EXIT_USAGE, "--fragment-size must be a "
			    "multiple of 327680 below 62914560");
		else if (ch == 'C')
			return fail(EXIT_USAGE, "--conflict must be fail, "
			    "replace or rename");
		else
			return cmd_usage(put_usage, ch, argc, argv);
	}
	if (argc - optind < 1 || argc - optind > 2)
		return cmd_usage(put_usage, 0, argc, argv);
	local = argv[optind];
	remote = optind + 1 < argc ? argv[optind + 1] : "/";
	if (local[0] == '\0' || remote[0] == '\0')
		return fail(EXIT_USAGE, "empty path: use . or / for a folder");
	state_prune(&P);
	if (stat(local, &st) == -1)
		return fail(errno == ENOENT ? EXIT_NOTFOUND : EXIT_FAIL,
		    "%s:", local);
	if (S_ISDIR(st.st_mode) && !recurse)
		return fail(EXIT_USAGE, "%s is a directory: use put -r", local);
	if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
		return err1("%s: not a regular file", local);
	if (scopy(lpath, sizeof(lpath), local) == -1)
		return fail(EXIT_USAGE, "%.60s...: local path too long", local);
	n = strlen(lpath);
	while (n > 1 && lpath[n - 1] == '/')
		lpath[--n] = '\0';
	if (put_target(lpath, remote, rpath, sizeof(rpath), &missing) == -1)
		return -1;
	if (!S_ISDIR(st.st_mode))
		return put_file(lpath, rpath);
	if (mkdir_p(rpath, missing) == -1)
		return -1;
	if (put_tree(lpath, sizeof(lpath), rpath, sizeof(rpath), 0, &jb) == -1)
		job_end(&jb, -1);
	return job_status(&jb);
}

/* ---------------------------------------------------------- mkdir, rm */

static const char mkdir_usage[] = "mkdir [-p] PATH...";

static int
cmd_mkdir(int argc, char **argv)
{
	static char path[PATH_MAX_];
	static struct item it;
	struct job jb = { 0, 0 };
	int	 ch, parents = 0;

	while ((ch = getopt_long(argc, argv, "+p", no_long, NULL)) != -1) {
		if (ch != 'p')
			return cmd_usage(mkdir_usage, ch, argc, argv);
		parents = 1;
	}
	if (optind >= argc)
		return cmd_usage(mkdir_usage, 0, argc, argv);
	for (; optind < argc; optind++) {
		if (path_norm(path, sizeof(path), argv[optind]) == -1)
			job_end(&jb, -1);
		else if (strcmp(path, "/") == 0)
			job_end(&jb, parents ? 0 : fail(EXIT_EXISTS,
			    "/ already exists"));
		else
			job_end(&jb, parents ? mkdir_p(path, 0) :
			    graph_mkdir(&G, path, &it, 0));
	}
	return job_status(&jb);
}

static int
rm_one(const char *arg, int recurse)
{
	static char path[PATH_MAX_];
	static struct item it;

	if (path_norm(path, sizeof(path), arg) == -1)
		return -1;
	if (strcmp(path, "/") == 0)
		return fail(EXIT_USAGE, "refusing to remove the drive root");
	if (graph_stat(&G, path, &it, 0) != 0)
		return -1;
	if (it.root)
		return fail(EXIT_USAGE, "refusing to remove the drive root");
	if (it.type == ITEM_FOLDER && it.children != 0 && !recurse)
		return err1("%s: folder is not empty (use rm -r)", path);
	if (graph_delete(&G, path) == -1)
		return -1;
	debug(1, "removed %s", path);
	return 0;
}

static const char rm_usage[] = "rm [-r] PATH...";

static int
cmd_rm(int argc, char **argv)
{
	struct job jb = { 0, 0 };
	int	 ch, recurse = 0;

	while ((ch = getopt_long(argc, argv, "+r", no_long, NULL)) != -1) {
		if (ch != 'r')
			return cmd_usage(rm_usage, ch, argc, argv);
		recurse = 1;
	}
	if (optind >= argc)
		return cmd_usage(rm_usage, 0, argc, argv);
	for (; optind < argc; optind++)
		job_end(&jb, rm_one(argv[optind], recurse));
	return job_status(&jb);
}

/* ------------------------------------------- whoami, login, logout */

static int
cmd_whoami(int argc, char **argv)
{
	struct drive d;

	const char *usage = argv[0][0] == 'd' ? "df" : "whoami";

	if (cmd_no_options(usage, argc, argv) == -1)
		return -1;
	if (optind != argc)
		return cmd_usage(usage, 0, argc, argv);
	if (graph_drive(&G, &d) == -1)
		return -1;
	printf("account: %s (%s)\n", d.email[0] ? d.email : "-",
	    d.owner[0] ? d.owner : "-");
	printf("drive: %s (%s)\n", d.id[0] ? d.id : "-",
	    d.type[0] ? d.type : "-");
	printf("total: %" PRId64 "\nused: %" PRId64 "\nremaining: %" PRId64
	    "\ndeleted: %" PRId64 "\nstate: %s\n", d.total, d.used,
	    d.remaining, d.deleted, d.state[0] ? d.state : "-");
	return 0;
}

static const char login_usage[] = "login [--device | --browser]";

static int
cmd_login(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "browser", no_argument, NULL, 'b' },
		{ "device", no_argument, NULL, 'd' },
		{ NULL, 0, NULL, 0 }
	};
	struct drive d;
	int	 ch, browser = -1, rc;

	while ((ch = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
		if (ch == 'b' || ch == 'd') {
			if (browser != -1 && browser != (ch == 'b'))
				return fail(EXIT_USAGE, "login: choose one of "
				    "--device and --browser");
			browser = ch == 'b';
		} else
			return cmd_usage(login_usage, ch, argc, argv);
	}
	if (optind != argc)
		return cmd_usage(login_usage, 0, argc, argv);
	if (auth_need_client(&P) == -1)
		return -1;
	memset(&T, 0, sizeof(T));
	if (conf_app_only(&P))
		rc = auth_client_credentials(&P, &T);
	else if (browser == 1)
		rc = auth_browser(&P, &T);
	else
		rc = auth_device(&P, &T);
	if (rc == -1)
		return -1;
	if (graph_drive(&G, &d) == -1)
		return -1;
	if (!quiet)
		fprintf(stderr, "odcp: signed in: drive %s (%s) of %s; "
		    "profile %s\n", d.id, d.type, d.email[0] ? d.email :
		    d.owner[0] ? d.owner : "app-only", P.name);
	return 0;
}

static int
cmd_logout(int argc, char **argv)
{
	char	 path[LPATH_MAX + PROFILE_MAX + 16];

	if (cmd_no_options("logout", argc, argv) == -1)
		return -1;
	if (optind != argc)
		return cmd_usage("logout", 0, argc, argv);
	token_path(&P, path, sizeof(path), "");
	if (unlink(path) == -1 && errno != ENOENT)
		return err1("%s:", path);
	if (!quiet)
		fprintf(stderr, "odcp: tokens of profile %s removed\n", P.name);
	return 0;
}

/* == 13. Command line and main ============================================ */

static const struct cmd {
	const char *name;
	int	 (*fn)(int, char **);
	int	 graph;			/* needs the drive and a token */
	const char *synopsis;
} cmds[] = {
	{ "login",  cmd_login,  1, login_usage },
	{ "logout", cmd_logout, 0, "logout" },
	{ "whoami", cmd_whoami, 1, "whoami" },
	{ "df",     cmd_whoami, 1, "df" },
	{ "ls",     cmd_ls,     1, ls_usage },
	{ "stat",   cmd_stat,   1, stat_usage },
	{ "get",    cmd_get,    1, get_usage },
	{ "put",    cmd_put,    1, put_usage },
	{ "mkdir",  cmd_mkdir,  1, mkdir_usage },
	{ "rm",     cmd_rm,     1, rm_usage },
};

static void
usage(FILE *f)
{
	size_t	 i;

	fprintf(f, "usage: odcp [-qv] [-p profile] [-c dir] [--cacert file] "
	    "[--client-id id]\n            [--tenant t] [--timeout s] "
	    "[--retries n] [--proxy url]\n            command [args]\n"
	    "commands:\n");
	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		fprintf(f, "  odcp %s\n", cmds[i].synopsis);
	fprintf(f, "See odcp(1).\n");
}

/* The configuration directory, in order of precedence. */
static int
config_dir(const char *opt, char *out, size_t sz)
{
	const char *e;

	if (opt != NULL)
		e = opt;
	else if ((e = getenv("ODCP_CONFIG_DIR")) != NULL && *e)
		;
	else if ((e = getenv("XDG_CONFIG_HOME")) != NULL && *e) {
		if (snprintf(out, sz, "%s/odcp", e) >= (int)sz)
			return fail(EXIT_USAGE, "XDG_CONFIG_HOME too long");
		return 0;
	} else if ((e = getenv("HOME")) != NULL && *e) {
		if (snprintf(out, sz, "%s/.config/odcp", e) >= (int)sz)
			return fail(EXIT_USAGE, "HOME too long");
		return 0;
	} else
		return fail(EXIT_USAGE, "no configuration directory: set "
		    "HOME, XDG_CONFIG_HOME or ODCP_CONFIG_DIR");
	if (scopy(out, sz, e) == -1)
		return fail(EXIT_USAGE, "configuration directory too long");
	return 0;
}

/* The global options, before the command. */
struct globals {
	const char *cfg, *client_id, *tenant, *cacert, *timeout, *prof;
	const char *retries, *proxy;
};

/* The first of these environment variables that is set, or NULL. */
static const char *
env_any(const char *a, const char *b)
{
	const char *e;

	if ((e = getenv(a)) != NULL)
		return e;
	return getenv(b);
}

/* The state directory (§9), in order of precedence. */
static int
state_dir_set(const char *cfg)
{
	const char *e;
	int	 n;

	if ((e = getenv("ODCP_STATE_DIR")) != NULL && *e)
		n = snprintf(state_dir, sizeof(state_dir), "%s", e);
	else if (cfg != NULL || ((e = getenv("ODCP_CONFIG_DIR")) && *e))
		n = snprintf(state_dir, sizeof(state_dir), "%s/state", P.dir);
	else if ((e = getenv("XDG_STATE_HOME")) != NULL && *e)
		n = snprintf(state_dir, sizeof(state_dir), "%s/odcp", e);
	else if ((e = getenv("HOME")) != NULL && *e)
		n = snprintf(state_dir, sizeof(state_dir),
		    "%s/.local/state/odcp", e);
	else
		n = snprintf(state_dir, sizeof(state_dir), "%s/state", P.dir);
	if (n < 0 || n >= (int)sizeof(state_dir) - 64)
		return fail(EXIT_USAGE, "state directory name too long");
	return 0;
}

/* Command line, then environment, over the profile's settings. */
static int
apply_overrides(const struct globals *o)
{
	const char *e, *client_id = o->client_id, *tenant = o->tenant;
	const char *cacert = o->cacert, *timeout = o->timeout, *from;
	char	*end;
	int64_t	 v;

	if (client_id == NULL && (e = getenv("ODCP_CLIENT_ID")) && *e)
		client_id = e;
	if (tenant == NULL && (e = getenv("ODCP_TENANT")) && *e)
		tenant = e;
	if (client_id && scopy(P.client_id, sizeof(P.client_id), client_id))
		return fail(EXIT_USAGE, "client id too long");
	if (tenant && scopy(P.tenant, sizeof(P.tenant), tenant))
		return fail(EXIT_USAGE, "tenant too long");
	if (strspn(P.tenant, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "0123456789-._") != strlen(P.tenant) || P.tenant[0] == '\0')
		return fail(EXIT_USAGE, "bad tenant '%s'", P.tenant);
	if (cacert && scopy(P.cacert, sizeof(P.cacert), cacert))
		return fail(EXIT_USAGE, "CA path too long");
	if (P.cacert[0] == '\0' && (e = getenv("SSL_CERT_FILE")) && *e &&
	    scopy(P.cacert, sizeof(P.cacert), e))
		return fail(EXIT_USAGE, "SSL_CERT_FILE too long");
	if (timeout) {
		if (parse_int(timeout, 1, 3600, &v) == -1)
			return fail(EXIT_USAGE, "--timeout must be 1 to 3600 "
			    "seconds");
		P.timeout = (int)v;
	}
	if (o->retries) {
		if (parse_int(o->retries, 0, RETRY_LIMIT, &v) == -1)
			return fail(EXIT_USAGE, "--retries must be 0 to %d",
			    RETRY_LIMIT);
		P.retries = (int)v;
	}
	retries = P.retries;
	if ((e = getenv("ODCP_RETRY_SCALE")) != NULL && *e) {
		retry_scale = strtod(e, &end);
		if (*end != '\0' || !(retry_scale >= 0 && retry_scale <= 1))
			return fail(EXIT_USAGE, "ODCP_RETRY_SCALE must be a "
			    "number from 0 to 1");
	}
	from = o->proxy ? "--proxy" : getenv("https_proxy") ? "https_proxy" :
	    getenv("HTTPS_PROXY") ? "HTTPS_PROXY" : "the proxy setting";
	e = o->proxy ? o->proxy : env_any("https_proxy", "HTTPS_PROXY");
	if (e == NULL)
		e = P.proxy;
	no_proxy = env_any("no_proxy", "NO_PROXY");
	if (proxy_set(e, from) == -1)
		return -1;
	ca_file = P.cacert[0] ? P.cacert : NULL;
	return 0;
}

static void
wipe_secrets(void)
{
	wipe(&T, sizeof(T));
	wipe(P.secret, sizeof(P.secret));
	wipe(P.proxy, sizeof(P.proxy));
	wipe(&proxy, sizeof(proxy));
	wipe(&oa, sizeof(oa));
}

/* Returns 0 to go on, 1 when done (--help, --version), -1 on error. */
static int
parse_globals(int argc, char **argv, struct globals *o)
{
	static const struct option opts[] = {
		{ "verbose", no_argument, NULL, 'v' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "profile", required_argument, NULL, 'p' },
		{ "config", required_argument, NULL, 'c' },
		{ "cacert", required_argument, NULL, 'A' },
		{ "client-id", required_argument, NULL, 'I' },
		{ "tenant", required_argument, NULL, 'T' },
		{ "timeout", required_argument, NULL, 'W' },
		{ "retries", required_argument, NULL, 'R' },
		{ "proxy", required_argument, NULL, 'X' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	int	 ch;

	memset(o, 0, sizeof(*o));
	while ((ch = getopt_long(argc, argv, "+vqp:c:hV", opts, NULL)) != -1) {
		switch (ch) {
		case 'v': verbose++; break;
		case 'q': quiet = 1; break;
		case 'p': o->prof = optarg; break;
		case 'c': o->cfg = optarg; break;
		case 'A': o->cacert = optarg; break;
		case 'I': o->client_id = optarg; break;
		case 'T': o->tenant = optarg; break;
		case 'W': o->timeout = optarg; break;
		case 'R': o->retries = optarg; break;
		case 'X': o->proxy = optarg; break;
		case 'h': usage(stdout); return 1;
		case 'V': printf("odcp %s\n", ODCP_VERSION); return 1;
		default:
			if (optopt != 0)
				return fail(EXIT_USAGE, "unknown option -%c before "
				    "the command (odcp --help lists them)", optopt);
			return fail(EXIT_USAGE, "unknown option %s before the "
			    "command (odcp --help lists them)", argv[optind - 1]);
		}
	}
	return 0;
}

/* The profile: its name, its file, then the environment and options. */
static int
setup_profile(const struct globals *o)
{
	const char *prof = o->prof;

	if (prof == NULL && (prof = getenv("ODCP_PROFILE")) != NULL && !*prof)
		prof = NULL;
	if (scopy(P.name, sizeof(P.name), prof ? prof : "default") == -1 ||
	    strspn(P.name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "0123456789-_.") != strlen(P.name) || P.name[0] == '.')
		return fail(EXIT_USAGE, "bad profile name");
	if (config_dir(o->cfg, P.dir, sizeof(P.dir)) == -1 ||
	    state_dir_set(o->cfg) == -1 ||
	    conf_load(&P) == -1 || apply_overrides(o) == -1 ||
	    conf_secret(&P) == -1)
		return -1;
	return 0;
}

#ifndef ODCP_NO_MAIN
/* A transfer cut short by a signal says that a rerun resumes it. */
static void
on_signal(int sig)
{
	static const char msg[] = "odcp: interrupted; the same put or get run "
	    "again resumes where this one stopped\n";
	ssize_t	 r;

	r = write(STDERR_FILENO, msg, sizeof(msg) - 1);
	(void)r;
	signal(sig, SIG_DFL);
	raise(sig);
}

int
main(int argc, char **argv)
{
	static const int stops[] = { SIGINT, SIGTERM, SIGHUP };
	struct globals o;
	const struct cmd *cmd = NULL;
	size_t	 i;
	int	 rc;

	/* a closed stdout must not become a socket that file bytes go to */
	for (i = 0; i < 3; i++)
		if (fcntl((int)i, F_GETFD) == -1 &&
		    open("/dev/null", i == 0 ? O_RDONLY : O_WRONLY) != (int)i)
			return EXIT_FAIL;
	signal(SIGPIPE, SIG_IGN);
	signal(SIGXFSZ, SIG_IGN);	/* a file size limit is a write error */
	for (i = 0; i < 3; i++)	/* what the parent ignores stays ignored */
		if (signal(stops[i], SIG_IGN) != SIG_IGN)
			signal(stops[i], on_signal);
	opterr = 0;		/* every usage error is our own one line */
	pool_init();
	srand((unsigned)time(NULL) ^ (unsigned)getpid());
	if ((rc = parse_globals(argc, argv, &o)) != 0)
		return rc == 1 ? EXIT_OK : EXIT_USAGE;
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (strcmp(argv[optind], cmds[i].name) == 0)
			cmd = &cmds[i];
	if (cmd == NULL)
		return fail(EXIT_USAGE, "unknown command '%s' (odcp --help "
		    "lists them)", argv[optind]), EXIT_USAGE;
	if (setup_profile(&o) == -1)
		return exit_status;
	argc -= optind;
	argv += optind;
	optind = 1;
	rc = 0;
	if (cmd->graph)
		rc = token_load(&P, &T) == -1 || graph_init(&G, &P, &T) == -1;
	if (rc == 0)
		rc = cmd->fn(argc, argv);
	wipe_secrets();
	if (fflush(stdout) != 0 || ferror(stdout))
		rc = fail(EXIT_FAIL, "stdout:");
	if (rc != 0 && exit_status == EXIT_OK)
		exit_status = EXIT_FAIL;
	return exit_status;
}
#endif
