/*
 * Unit tests for odcp.  This file includes odcp.c, so every static
 * function is visible (style.md B.12).  Run from the repository root:
 *	make tests/unit tests/unit-san && tests/unit && tests/unit-san
 * ODCP_JSONSUITE names the JSONTestSuite directory (default
 * ../shared/testdata/jsontestsuite).  tests/unit -e 'JSON' prints the
 * events of a JSON text, to cut and paste new rows into jcases[].
 */
#define ODCP_NO_MAIN
#include "../odcp.c"

#include <sys/mman.h>

/* == Harness ============================================================== */

static int npass, nfail;
static char tcase[80];			/* the table row under test */

#define CHECK(e)	check((e) != 0, __FILE__, __LINE__, #e)
#define CHECK_STR(a, b)	check_str((a), (b), __FILE__, __LINE__, #a)

static void
check(int ok, const char *file, int line, const char *expr)
{
	if (ok) {
		npass++;
		return;
	}
	nfail++;
	fprintf(stderr, "%s:%d: FAIL [%s]: %s\n", file, line, tcase, expr);
}

/* Append n bytes of s to out, printable ASCII as is, the rest as \xHH. */
static void
render(char *out, size_t sz, const char *s, size_t n)
{
	size_t	 len = strlen(out), i;
	unsigned char c;

	for (i = 0; i < n && len + 5 < sz; i++) {
		c = (unsigned char)s[i];
		if (c >= 0x20 && c < 0x7f && c != '\\')
			out[len++] = (char)c;
		else
			len += (size_t)sprintf(out + len, "\\x%02x", c);
	}
	out[len] = '\0';
}

static void
check_str(const char *got, const char *want, const char *file, int line,
    const char *expr)
{
	static char g[600], w[600];

	check(strcmp(got, want) == 0, file, line, expr);
	if (strcmp(got, want) != 0) {
		g[0] = w[0] = '\0';
		render(g, sizeof(g), got, strlen(got));
		render(w, sizeof(w), want, strlen(want));
		fprintf(stderr, "\tgot  \"%s\"\n\twant \"%s\"\n", g, w);
	}
}

/* Name the case after its input. */
static void
tc(const char *s, size_t n)
{
	tcase[0] = '\0';
	render(tcase, sizeof(tcase) - 20, s, n < 40 ? n : 40);
	if (n > 40)
		sprintf(tcase + strlen(tcase), "... (%zu bytes)", n);
}

/* Capture stderr around calls expected to fail, to check the message. */
static FILE *cap;
static int saved_err = -1;
static char captured[2048];

static void
err_begin(void)
{
	fflush(stderr);
	if ((cap = tmpfile()) == NULL || (saved_err = dup(2)) == -1)
		exit(2);
	dup2(fileno(cap), 2);
}

static const char *
err_end(void)
{
	size_t	 n;

	fflush(stderr);
	dup2(saved_err, 2);
	close(saved_err);
	rewind(cap);
	n = fread(captured, 1, sizeof(captured) - 1, cap);
	captured[n] = '\0';
	fclose(cap);
	return captured;
}

/*
 * The memory transport: reads serve p[off..len), at most step bytes a
 * call (0: as many as asked), then EOF, or -1 if fail is set.  Writes
 * are appended to out, or fail if wfail is set.
 */
struct mem {
	const unsigned char *p;
	size_t	 len, off, step;
	int	 fail, wfail, writes;
	unsigned char *out;
	size_t	 olen, ocap;
};

static long
mem_take(struct mem *m, unsigned char *buf, size_t n)
{
	if (m->step && n > m->step)
		n = m->step;
	if (n > m->len - m->off)
		n = m->len - m->off;
	if (n == 0 && m->fail)
		return -1;
	memcpy(buf, m->p + m->off, n);
	m->off += n;
	return (long)n;
}

static long
mem_rd(struct conn *c, unsigned char *buf, size_t n)
{
	return mem_take(c->arg, buf, n);
}

static long
mem_jrd(void *ctx, unsigned char *buf, size_t n)
{
	return mem_take(ctx, buf, n);
}

static long
mem_wr(struct conn *c, const unsigned char *buf, size_t n)
{
	struct mem *m = c->arg;

	m->writes++;
	if (m->wfail)
		return -1;
	if (m->olen + n > m->ocap) {
		m->ocap = (m->olen + n) * 2;
		if ((m->out = realloc(m->out, m->ocap)) == NULL)
			exit(2);
	}
	memcpy(m->out + m->olen, buf, n);
	m->olen += n;
	return (long)n;
}

static void
mem_init(struct mem *m, const void *p, size_t len, size_t step)
{
	memset(m, 0, sizeof(*m));
	m->p = p;
	m->len = len;
	m->step = step;
}

static void
mem_conn(struct conn *c, struct mem *m, const void *p, size_t len,
    size_t step)
{
	mem_init(m, p, len, step);
	c->fd = -1;
	c->err = 0;
	c->roff = c->rlen = 0;
	c->rd = mem_rd;
	c->wr = mem_wr;
	c->arg = m;
	strcpy(c->host, "test");
}

/* == 1. HTTP framing ====================================================== */

/* How a source is fed: bytes per transport read, bytes per http_read. */
static const struct {
	size_t	 step, rsz;
} feeds[] = { { 0, 65536 }, { 1, 1 }, { 1, 4096 }, { 7, 3 }, { 0, 1 } };
#define NFEEDS	(sizeof(feeds) / sizeof(feeds[0]))

struct got {
	int	 rc;
	struct http_resp r;
	char	 body[65536];
	size_t	 blen;
	char	 rest[256];		/* left unread, for a next response */
	char	 err[512];		/* what odcp said on stderr */
};

/* Read a response head and its whole body from in. */
static void
fetch(const char *in, size_t len, size_t step, size_t rsz, int head_only,
    struct got *g)
{
	static struct conn c;
	struct mem m;
	size_t	 n;
	long	 got = 0;

	mem_conn(&c, &m, in, len, step);
	memset(g, 0, sizeof(*g));
	err_begin();
	g->rc = http_recv_head(&c, &g->r, head_only);
	while (g->rc == 0 && (n = sizeof(g->body) - g->blen) > 0) {
		got = http_read(&c, &g->r, g->body + g->blen,
		    n < rsz ? n : rsz);
		if (got <= 0)
			break;
		g->blen += (size_t)got;
	}
	if (got < 0)
		g->rc = -1;
	snprintf(g->err, sizeof(g->err), "%s", err_end());
	n = c.rlen - c.roff;
	if (n + m.len - m.off < sizeof(g->rest)) {
		memcpy(g->rest, c.rbuf + c.roff, n);
		memcpy(g->rest + n, m.p + m.off, m.len - m.off);
	}
}

#define OK200	"HTTP/1.1 200 OK\r\n"
#define CHUNKED	OK200 "Transfer-Encoding: chunked\r\n\r\n"
#define CLEN(n)	OK200 "Content-Length: " #n "\r\n\r\n"

static const struct {
	const char *in;
	int	 head_only, status, close;
	const char *body, *rest;	/* rest: left for the next response */
} hgood[] = {
	{ CLEN(5) "helloNEXT", 0, 200, 0, "hello", "NEXT" },
	{ CHUNKED "5\r\nhello\r\n1;ext=1\r\n,\r\nA\r\n0123456789\r\n"
	    "a;x=\"y\"\r\nabcdefghij\r\n1F\r\nABCDEFGHIJKLMNOPQRSTUVWXYZ01234"
	    "\r\n0\r\nX-Trailer: 1\r\nX-Other: 2\r\n\r\nNEXT", 0, 200, 0,
	    "hello,0123456789abcdefghijABCDEFGHIJKLMNOPQRSTUVWXYZ01234",
	    "NEXT" },
	{ CHUNKED "3\r\nabc\r\n0;last=yes\r\n\r\n", 0, 200, 0, "abc", "" },
	{ OK200 "Content-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "2\r\nok\r\n0\r\n\r\nNEXT", 0, 200, 0, "ok", "NEXT" },
	{ OK200 "Content-Type: text/plain\r\n\r\nuntil the end", 0, 200, 1,
	    "until the end", "" },
	{ "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 0, 200, 1, "ok",
	    "" },
	{ OK200 "Connection: Close\r\nContent-Length: 2\r\n\r\nok", 0, 200, 1,
	    "ok", "" },
	{ "HTTP/1.1 204 No Content\r\n\r\nNEXT", 0, 204, 0, "", "NEXT" },
	{ "HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\nNEXT", 0,
	    304, 0, "", "NEXT" },
	{ CLEN(1000) "NEXT", 1, 200, 0, "", "NEXT" },		/* HEAD */
	{ "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\nNEXT", 0, 201, 0,
	    "", "NEXT" },
	{ "HTTP/1.1 100 Continue\r\n\r\n" CLEN(2) "okNEXT", 0, 200, 0, "ok",
	    "NEXT" },
	{ "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 100 "
	    "Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n"
	    "\r\nnon", 0, 404, 0, "non", "" },
	{ "HTTP/1.1 200\r\nContent-Length: 1\r\n\r\nx", 0, 200, 0, "x", "" },
	{ OK200 "content-LENGTH:3\r\n\r\nabcNEXT", 0, 200, 0, "abc", "NEXT" },
};

#define BADST	"test: improper status line"
#define EOFMID	"test: connection closed in the middle"
#define BADCH	"test: improper chunk size line"
#define FRAMING	"test: improper body framing"

static const struct {
	const char *in, *err;		/* err: on stderr */
} hbad[] = {
	{ "HTTP/2 200 OK\r\n\r\n", BADST },
	{ "ICY 200 OK\r\n\r\n", BADST },
	{ "HTTP/1.1 2000 OK\r\n\r\n", BADST },
	{ "HTTP/1.1 20x OK\r\n\r\n", BADST },
	{ "HTTP/1.1 099 Low\r\n\r\n", BADST },
	{ "HTTP/1.1 200OK\r\n\r\n", BADST },
	{ "", EOFMID },
	{ OK200 "Content-Len", EOFMID },
	{ "HTTP/1.1 100 Continue\r\n\r\n", EOFMID },
	{ CHUNKED "zz\r\nhello\r\n0\r\n\r\n", BADCH },
	{ CHUNKED "\r\nhello\r\n0\r\n\r\n", BADCH },
	{ CHUNKED " 5\r\nhello\r\n0\r\n\r\n", BADCH },
	{ CHUNKED "-1\r\nhello\r\n0\r\n\r\n", BADCH },
	{ CHUNKED "FFFFFFFFFFFFFFFFF\r\nx\r\n", "chunk size too large" },
	{ CHUNKED "5\r\nhelloXX\r\n0\r\n\r\n", "chunk not followed by CRLF" },
	{ OK200 "Content-Length: abc\r\n\r\n", FRAMING },
	{ OK200 "Content-Length: -1\r\n\r\n", FRAMING },
	{ OK200 "Content-Length: +5\r\n\r\nhello", FRAMING },
	{ OK200 "Content-Length: 99999999999999999999\r\n\r\n", FRAMING },
	{ OK200 "Transfer-Encoding: gzip\r\n\r\nxx", FRAMING },
	{ OK200 "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", FRAMING },
	{ CLEN(10) "hello", EOFMID },
	{ CHUNKED "a\r\nhello", EOFMID },
	{ CHUNKED "5\r\nhello\r\n", EOFMID },
	{ CHUNKED "5\r\nhello\r\n0\r\n", EOFMID },
};

/* One response, every feed: the same answer whole and piecewise. */
static void
http_case(const char *in, size_t len, int head_only, int status, int closed,
    const char *body, const char *rest)
{
	static struct got g, first;
	size_t	 f;

	tc(in, len);
	for (f = 0; f < NFEEDS; f++) {
		fetch(in, len, feeds[f].step, feeds[f].rsz, head_only, &g);
		if (status != -1) {
			CHECK(g.rc == 0 && g.r.done);
			CHECK(g.r.status == status && g.r.close == closed);
			CHECK(g.blen == strlen(body));
			CHECK(memcmp(g.body, body, g.blen) == 0);
			CHECK_STR(g.rest, rest);
			CHECK_STR(g.err, "");
		} else {
			CHECK(g.rc == -1);
			CHECK(strstr(g.err, body) != NULL);
		}
		if (f == 0)
			first = g;
		CHECK(g.r.status == first.r.status);
		CHECK_STR(g.err, first.err);
	}
}

static void
test_http_recv(void)
{
	static char in[3 * HTTP_LINE_MAX];
	static struct got g;
	size_t	 i, n;

	for (i = 0; i < sizeof(hgood) / sizeof(hgood[0]); i++)
		http_case(hgood[i].in, strlen(hgood[i].in), hgood[i].head_only,
		    hgood[i].status, hgood[i].close, hgood[i].body,
		    hgood[i].rest);
	for (i = 0; i < sizeof(hbad) / sizeof(hbad[0]); i++)
		http_case(hbad[i].in, strlen(hbad[i].in), 0, -1, 0, hbad[i].err,
		    NULL);

	/*
	 * A header line of n bytes before its LF (CR included): up to
	 * HTTP_LINE_MAX - 1 is taken, one more is too long, however the
	 * bytes arrive.  The header starts at byte 17.
	 */
	for (n = HTTP_LINE_MAX - 1; n <= HTTP_LINE_MAX + 800; n += 801) {
		strcpy(in, OK200 "X-Long: ");
		i = strlen(in);
		memset(in + i, 'a', 17 + n - 1 - i);
		strcpy(in + 17 + n - 1, "\r\nContent-Length: 2\r\n\r\nok");
		http_case(in, strlen(in), 0, n < HTTP_LINE_MAX ? 200 : -1, 0,
		    n < HTTP_LINE_MAX ? "ok" : "line too long in response", "");
	}

	strcpy(tcase, "headers kept");
	strcpy(in, "HTTP/1.1 302 Found\r\nLocation:   https://dl.example/x?a=1 "
	    " \r\nRetry-After: 30\r\nCONTENT-RANGE: bytes 0-9/100\r\nDate: "
	    "Wed, 21 Oct 2015 07:28:00 GMT\r\ncontent-type:application/json\r\n"
	    "X-Unknown: y\r\nContent-Length: 0\r\n\r\n");
	for (i = 0; i < NFEEDS; i++) {
		fetch(in, strlen(in), feeds[i].step, 4096, 0, &g);
		CHECK(g.rc == 0 && g.r.status == 302);
		CHECK_STR(g.r.location, "https://dl.example/x?a=1");
		CHECK_STR(g.r.retry_after, "30");
		CHECK_STR(g.r.content_range, "bytes 0-9/100");
		CHECK_STR(g.r.date, "Wed, 21 Oct 2015 07:28:00 GMT");
		CHECK_STR(g.r.content_type, "application/json");
	}
	strcpy(tcase, "1xx headers do not leak");
	strcpy(in, "HTTP/1.1 103 Early Hints\r\nLocation: /x\r\n\r\n" CLEN(0));
	fetch(in, strlen(in), 0, 4096, 0, &g);
	CHECK(g.rc == 0 && g.r.status == 200 && g.r.location[0] == '\0');
}

/* conn_getline alone, with an 8-byte buffer to make the limit visible. */
static void
test_getline(void)
{
	static const struct {
		const char *in;
		long	 len;		/* -1: refused */
		const char *line;	/* or the message */
	} t[] = {
		{ "abc\r\nrest", 3, "abc" }, { "abc\nrest", 3, "abc" },
		{ "\r\n", 0, "" }, { "\n", 0, "" }, { "a\rb\r\n", 3, "a\rb" },
		{ "123456\n", 6, "123456" },
		{ "1234567\n", 7, "1234567" },		/* sz - 1 bytes */
		{ "123456\r\n", 6, "123456" },		/* the same with CR */
		{ "12345678\n", -1, "line too long" },
		{ "1234567\r\n", -1, "line too long" },
		{ "abc", -1, "connection closed in the middle" },
	};
	static struct conn c;
	struct mem m;
	char	 buf[64], msg[256];
	size_t	 i, step;
	long	 n;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		tc(t[i].in, strlen(t[i].in));
		for (step = 0; step <= 1; step++) {
			mem_conn(&c, &m, t[i].in, strlen(t[i].in), step);
			err_begin();
			n = conn_getline(&c, buf, 8);
			snprintf(msg, sizeof(msg), "%s", err_end());
			CHECK(n == t[i].len);
			if (n >= 0 && t[i].len >= 0)
				CHECK(strcmp(buf, t[i].line) == 0);
			if (t[i].len < 0)
				CHECK(strstr(msg, t[i].line) != NULL);
			if (n < 0)	/* sticky */
				CHECK(c.err && conn_getline(&c, buf, 8) == -1);
		}
	}
}

/* Bodies and connections: discard, keep-alive, transport errors. */
static void
test_http_body(void)
{
	static struct conn c;
	static struct http_resp r;
	static char big[2 * 1024 * 1024 + 128];
	static const char three[] = "HTTP/1.1 404 Not Found\r\nContent-Length:"
	    " 9\r\n\r\nnot found" CHUNKED "3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
	    CLEN(2) "ok";
	struct mem m;
	char	 buf[16];
	size_t	 step, n;
	long	 got;

	strcpy(tcase, "discard, then the next response");
	for (step = 0; step <= 1; step++) {
		mem_conn(&c, &m, three, strlen(three), step);
		CHECK(http_recv_head(&c, &r, 0) == 0 && r.status == 404);
		CHECK(http_discard(&c, &r) == 0 && r.done && !r.close);
		CHECK(http_recv_head(&c, &r, 0) == 0 && r.chunked);
		CHECK(http_discard(&c, &r) == 0 && r.done);
		CHECK(http_recv_head(&c, &r, 0) == 0 && r.status == 200);
		memset(buf, 0, sizeof(buf));
		for (n = 0; (got = http_read(&c, &r, buf + n, 8)) > 0;
		    n += (size_t)got)
			;
		CHECK(got == 0 && n == 2 && strcmp(buf, "ok") == 0);
		CHECK(http_read(&c, &r, buf, sizeof(buf)) == 0);
		CHECK(m.off == m.len && c.roff == c.rlen);
	}

	strcpy(tcase, "discard stops after 1 MiB");
	n = (size_t)sprintf(big, CLEN(2097152));
	memset(big + n, 'x', 2097152);
	mem_conn(&c, &m, big, n + 2097152, 0);
	CHECK(http_recv_head(&c, &r, 0) == 0 && r.clen == 2097152);
	CHECK(http_discard(&c, &r) == 0);
	CHECK(r.close == 1 && r.done == 0);	/* not to be reused */

	strcpy(tcase, "transport error in a body is sticky");
	mem_conn(&c, &m, CLEN(10) "hello", strlen(CLEN(10) "hello"), 0);
	m.fail = 1;
	CHECK(http_recv_head(&c, &r, 0) == 0);
	CHECK(http_read(&c, &r, buf, sizeof(buf)) == 5);
	CHECK(http_read(&c, &r, buf, sizeof(buf)) == -1 && c.err == 1);
	m.fail = 0;
	m.off = 0;			/* more bytes arrive: too late */
	CHECK(http_read(&c, &r, buf, sizeof(buf)) == -1);
}

/* Send q; 1 if the bytes written are the request line, head and body. */
static int
sent(const struct http_req *q, const char *hostport, const char *head,
    const void *body, size_t blen)
{
	static struct conn c;
	static char want[300000];
	struct mem m;
	size_t	 n;
	int	 ok;

	mem_conn(&c, &m, "", 0, 0);
	ok = http_send(&c, hostport, q) == 0;
	n = (size_t)sprintf(want, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: "
	    "%s\r\n%s", q->method, q->target, hostport, USER_AGENT, head);
	memcpy(want + n, body, blen);
	ok = ok && m.olen == n + blen && memcmp(m.out, want, n + blen) == 0;
	free(m.out);
	return ok;
}

static void
test_http_send(void)
{
	static struct conn c;
	static unsigned char file[200000];
	static char target[URL_MAX + 8];
	struct http_req q;
	struct mem m;
	char	 tmp[] = "/tmp/odcp-unit.XXXXXX";
	size_t	 i;
	int	 fd;

	strcpy(tcase, "http_send");
	memset(&q, 0, sizeof(q));
	q.method = "GET";
	q.target = "/v1.0/me/drive/root:/a%20b:/children?$top=5";
	q.hdrs = "Accept: application/json\r\n";
	q.fd = -1;
	CHECK(sent(&q, "graph.example", "Accept: application/json\r\n\r\n", "",
	    0));
	q.method = "POST";
	q.hdrs = NULL;
	q.body = "a=b&c=d";
	q.blen = 7;
	CHECK(sent(&q, "login.example:8443", "Content-Length: 7\r\n\r\n",
	    "a=b&c=d", 7));
	q.blen = 0;
	q.has_body = 1;
	CHECK(sent(&q, "h", "Content-Length: 0\r\n\r\n", "", 0));

	strcpy(tcase, "http_send of a file region");
	for (i = 0; i < sizeof(file); i++)
		file[i] = (unsigned char)((i * 7 + 3) % 251);
	if ((fd = mkstemp(tmp)) == -1 || write_all(fd, file, sizeof(file)))
		exit(2);
	unlink(tmp);
	q.method = "PUT";
	q.hdrs = "Content-Range: bytes 12345-162345/200000\r\n";
	q.fd = fd;
	q.off = 12345;
	q.flen = 150001;
	CHECK(sent(&q, "up.example", "Content-Range: bytes 12345-162345/200000"
	    "\r\nContent-Length: 150001\r\n\r\n", file + 12345, 150001));
	q.off = 199990;
	q.flen = 20;
	err_begin();
	CHECK(!sent(&q, "up.example", "", "", 0));
	CHECK(strstr(err_end(), "file shrank") != NULL);
	close(fd);

	strcpy(tcase, "http_send, failing writer");
	q.fd = -1;
	mem_conn(&c, &m, "", 0, 0);
	m.wfail = 1;
	CHECK(http_send(&c, "h", &q) == -1 && c.err == 1 && m.writes == 1);
	CHECK(conn_write(&c, "x", 1) == -1 && m.writes == 1);

	strcpy(tcase, "http_send, target over URL_MAX");
	memset(target, 'a', sizeof(target) - 1);
	target[0] = '/';
	q.target = target;
	mem_conn(&c, &m, "", 0, 0);
	err_begin();
	CHECK(http_send(&c, "h", &q) == -1 && m.olen == 0);
	CHECK(strstr(err_end(), "request target too long") != NULL);
}

/* == 2. JSON tokenizer ==================================================== */

/* The events of a document: "OBJ KEY:a NUM:1 ... END", up to an ERR. */
static void
json_events(const void *in, size_t len, size_t step, char *out, size_t sz,
    char *msg, size_t msgsz)
{
	static struct json j;
	const char *name;
	struct mem m;
	enum json_ev ev;
	char	 first[sizeof(j.msg)];

	mem_init(&m, in, len, step);
	json_init(&j, mem_jrd, &m);
	out[0] = '\0';
	do {
		ev = json_next(&j);
		name = json_event_names[ev];
		if (out[0])
			bcat(out, sz, " ", 1);
		bcat(out, sz, name, strlen(name));
		if (ev == JSON_KEY || ev == JSON_STR || ev == JSON_NUM) {
			bcat(out, sz, ":", 1);
			render(out, sz, j.str, j.slen);
		}
	} while (ev != JSON_END && ev != JSON_ERR);
	if (ev == JSON_ERR) {		/* errors are sticky, message too */
		snprintf(first, sizeof(first), "%s", j.msg);
		CHECK(json_next(&j) == JSON_ERR && json_next(&j) == JSON_ERR);
		CHECK(strcmp(j.msg, first) == 0 && j.msg[0] != '\0');
	}
	if (msg != NULL)
		snprintf(msg, msgsz, "%s", j.msg);
}

static const struct {
	const char *in, *ev;
} jcases[] = {
	{ "{\"a\":1,\"b\":[true,false,null],\"c\":{}}", "OBJ KEY:a NUM:1 "
	    "KEY:b ARR TRUE FALSE NULL ARR_END KEY:c OBJ OBJ_END OBJ_END END" },
	{ " \t\r\n[ ] \n", "ARR ARR_END END" },
	{ "[[],{},[{}]]", "ARR ARR ARR_END OBJ OBJ_END ARR OBJ OBJ_END ARR_END "
	    "ARR_END END" },
	{ "\"x\"", "STR:x END" },
	{ "{\"\":\"\"}", "OBJ KEY: STR: OBJ_END END" },
	{ "-0.5e+10", "NUM:-0.5e+10 END" },
	{ "[0,-0,1E3,2e-7,10.25]", "ARR NUM:0 NUM:-0 NUM:1E3 NUM:2e-7 "
	    "NUM:10.25 ARR_END END" },
	{ "9223372036854775807", "NUM:9223372036854775807 END" },
	{ "5497558138880", "NUM:5497558138880 END" },
	{ "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"",
	    "STR:\"\\x5c/\\x08\\x0c\\x0a\\x0d\\x09 END" },
	{ "\"\\u0041\\u00e9\\u20AC\\ud83d\\ude00\"",
	    "STR:A\\xc3\\xa9\\xe2\\x82\\xac\\xf0\\x9f\\x98\\x80 END" },
	{ "\"a\\u0000b\"", "STR:a\\x00b END" },
	{ "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"",
	    "STR:\\xc3\\xa9\\xe2\\x82\\xac\\xf0\\x9f\\x98\\x80 END" },
	{ "\"\xef\xbf\xbf\xf4\x8f\xbf\xbf\"",
	    "STR:\\xef\\xbf\\xbf\\xf4\\x8f\\xbf\\xbf END" },
	{ "{\"k\\u00e9y\":\"v\"}", "OBJ KEY:k\\xc3\\xa9y STR:v OBJ_END END" },

	{ "", "ERR" }, { "   ", "ERR" }, { "{\"a\" 1}", "OBJ ERR" },
	{ "{\"a\":1,}", "OBJ KEY:a NUM:1 ERR" }, { "{1:2}", "OBJ ERR" },
	{ "{'a':1}", "OBJ ERR" }, { "[1,]", "ARR NUM:1 ERR" },
	{ "[1 2]", "ARR NUM:1 ERR" }, { "[1]]", "ARR NUM:1 ARR_END ERR" },
	{ "{]", "OBJ ERR" }, { "[}", "ARR ERR" }, { "[", "ARR ERR" },
	{ "1 2", "NUM:1 ERR" }, { "01", "NUM:0 ERR" }, { "-", "ERR" },
	{ "1.", "ERR" }, { ".5", "ERR" }, { "1e", "ERR" }, { "+1", "ERR" },
	{ "tru", "ERR" }, { "nul1", "ERR" }, { "NaN", "ERR" },
	{ "\"abc", "ERR" }, { "\"\\x\"", "ERR" }, { "\"\\u12\"", "ERR" },
	{ "\"a\tb\"", "ERR" }, { "\"\\ud800\"", "ERR" },
	{ "\"\\udc00\"", "ERR" }, { "\"\\ud800\\u0041\"", "ERR" },
	{ "\"\\ude00\\ud83d\"", "ERR" }, { "\"\x80\"", "ERR" },
	{ "\"\xc0\x80\"", "ERR" }, { "\"\xe0\x80\xaf\"", "ERR" },
	{ "\"\xf0\x8f\xbf\xbf\"", "ERR" },	/* overlongs */
	{ "\"\xed\xa0\x80\"", "ERR" }, { "\"\xf4\x90\x80\x80\"", "ERR" },
	{ "\"\xe2\x82\"", "ERR" },
};

static void
test_json_events(void)
{
	char	 ev[4096], msg[128];
	size_t	 i, step;

	for (i = 0; i < sizeof(jcases) / sizeof(jcases[0]); i++) {
		tc(jcases[i].in, strlen(jcases[i].in));
		for (step = 0; step <= 1; step++) {
			json_events(jcases[i].in, strlen(jcases[i].in), step,
			    ev, sizeof(ev), NULL, 0);
			CHECK_STR(ev, jcases[i].ev);
		}
	}
	strcpy(tcase, "raw NUL in a string");
	json_events("\"a\0b\"", 5, 0, ev, sizeof(ev), msg, sizeof(msg));
	CHECK_STR(ev, "ERR");
	CHECK(strstr(msg, "control character") != NULL);
	strcpy(tcase, "message of a lone surrogate");
	json_events("[\"\\udc00\"]", 10, 1, ev, sizeof(ev), msg, sizeof(msg));
	CHECK_STR(msg, "lone low surrogate at byte 8 of the answer");
}

/* pre, then n bytes c, then post, in a new buffer. */
static char *
json_build(const char *pre, int c, size_t n, const char *post, size_t *len)
{
	char	*s;

	*len = strlen(pre) + n + strlen(post);
	if ((s = malloc(*len + 1)) == NULL)
		exit(2);
	strcpy(s, pre);
	memset(s + strlen(pre), c, n);
	strcpy(s + strlen(pre) + n, post);
	return s;
}

static void
test_json_limits(void)
{
	static struct json j;
	static char ev[4096], msg[128], deep[2 * JSON_DEPTH_MAX + 2];
	struct mem m;
	char	*s, *t, out[64];
	size_t	 len, tlen, step, d;
	int64_t	 v;

	strcpy(tcase, "string of JSON_STR_MAX bytes");
	s = json_build("\"", 'a', JSON_STR_MAX, "\"", &len);
	mem_init(&m, s, len, 0);
	json_init(&j, mem_jrd, &m);
	CHECK(json_next(&j) == JSON_STR && j.slen == JSON_STR_MAX);
	CHECK(json_next(&j) == JSON_END);
	free(s);
	strcpy(tcase, "string of JSON_STR_MAX + 1 bytes");
	s = json_build("[\"", 'a', JSON_STR_MAX - 1, "\xc3\xa9\"]", &len);
	json_events(s, len, 0, ev, sizeof(ev), msg, sizeof(msg));
	CHECK_STR(ev, "ARR ERR");
	CHECK(strstr(msg, "string longer than JSON_STR_MAX") != NULL);
	free(s);
	strcpy(tcase, "number longer than JSON_STR_MAX");
	s = json_build("[", '7', JSON_STR_MAX + 1, "]", &len);
	json_events(s, len, 0, ev, sizeof(ev), NULL, 0);
	CHECK_STR(ev, "ARR ERR");
	free(s);

	for (d = JSON_DEPTH_MAX; d <= JSON_DEPTH_MAX + 1; d++) {
		snprintf(tcase, sizeof(tcase), "depth %zu", d);
		memset(deep, '[', d);
		memset(deep + d, ']', d);
		for (step = 0; step <= 1; step++) {
			json_events(deep, 2 * d, step, ev, sizeof(ev), msg,
			    sizeof(msg));
			len = strlen(ev);
			if (d == JSON_DEPTH_MAX)
				CHECK(strcmp(ev + len - 4, " END") == 0);
			else
				CHECK(strstr(msg, "nesting deeper than "
				    "JSON_DEPTH_MAX") != NULL);
		}
	}

	/* json_skip scans without storing: 100 KB strings pass. */
	strcpy(tcase, "json_skip over big unknown values");
	t = json_build("", 'x', 100000, "", &tlen);
	if ((s = malloc(3 * tlen + 512)) == NULL)
		exit(2);
	len = (size_t)sprintf(s, "{\"skip\":{\"a\":[1,{\"%s\":\"%s\",\"c\":"
	    "[[[[]]]]}],\"d\":{\"e\":{\"f\":{\"g\":[null,true,-1.5e300]}}}},"
	    "\"big\":\"%s\",\"keep\":\"yes\",\"n\":-12,"
	    "\"q\":\"5497558138880\"}", t, t, t);
	for (step = 0; step <= 1; step++) {
		mem_init(&m, s, len, step);
		json_init(&j, mem_jrd, &m);
		CHECK(json_next(&j) == JSON_OBJ);
		CHECK(json_next(&j) == JSON_KEY && strcmp(j.str, "skip") == 0);
		CHECK(json_skip(&j) == 0);
		CHECK(json_next(&j) == JSON_KEY && strcmp(j.str, "big") == 0);
		CHECK(json_skip(&j) == 0);
		CHECK(json_next(&j) == JSON_KEY && strcmp(j.str, "keep") == 0);
		CHECK(json_get_str(&j, out, sizeof(out)) == 0);
		CHECK_STR(out, "yes");
		CHECK(json_next(&j) == JSON_KEY && json_get_int(&j, &v) == 0);
		CHECK(v == -12);
		CHECK(json_next(&j) == JSON_KEY && json_get_int(&j, &v) == 0);
		CHECK(v == INT64_C(5497558138880));
		CHECK(json_next(&j) == JSON_OBJ_END);
		CHECK(json_next(&j) == JSON_END && j.err == 0);
	}
	strcpy(tcase, "the same string, stored");
	sprintf(s, "{\"big\":\"%s\"}", t);
	mem_init(&m, s, strlen(s), 0);
	json_init(&j, mem_jrd, &m);
	CHECK(json_next(&j) == JSON_OBJ && json_next(&j) == JSON_KEY);
	CHECK(json_next(&j) == JSON_ERR);
	CHECK(strstr(j.msg, "string longer than JSON_STR_MAX") != NULL);
	free(s);
	free(t);

	strcpy(tcase, "json_skip at the end of input");
	mem_init(&m, "{\"a\":", 5, 0);
	json_init(&j, mem_jrd, &m);
	CHECK(json_next(&j) == JSON_OBJ && json_next(&j) == JSON_KEY);
	CHECK(json_skip(&j) == -1 && j.err);

	strcpy(tcase, "read error");
	mem_init(&m, "[1,", 3, 1);
	m.fail = 1;
	json_init(&j, mem_jrd, &m);
	CHECK(json_next(&j) == JSON_ARR && json_next(&j) == JSON_NUM);
	CHECK(json_next(&j) == JSON_ERR && strstr(j.msg, "read error"));
	CHECK(json_next(&j) == JSON_ERR);
}

/* json_get_int and json_get_str, one value each. */
static void
test_json_get(void)
{
	static const struct {
		const char *in;
		int	 rc;
		int64_t	 v;
	} ints[] = {
		{ "0", 0, 0 }, { "-12", 0, -12 }, { "\"3600\"", 0, 3600 },
		{ "9223372036854775807", 0, INT64_MAX },
		{ "-9223372036854775807", 0, -INT64_MAX },
		{ "5497558138880", 0, INT64_C(5497558138880) },
		{ "9223372036854775808", -1, 0 }, { "1.5", -1, 0 },
		{ "1e3", -1, 0 }, { "true", -1, 0 }, { "null", -1, 0 },
		{ "\"12a\"", -1, 0 }, { "[1]", -1, 0 },
	};
	static const struct {
		const char *in;
		size_t	 sz;
		int	 rc;
		const char *out;	/* or the message */
	} strs[] = {
		{ "\"abc\"", 4, 0, "abc" }, { "null", 4, 0, "" },
		{ "\"abcd\"", 4, -1, "string too long" },
		{ "\"a\\u0000b\"", 16, -1, "holds NUL" },
		{ "42", 16, -1, "expected a string, not NUM" },
		{ "{}", 16, -1, "expected a string, not OBJ" },
	};
	static struct json j;
	struct mem m;
	char	 out[16];
	int64_t	 v;
	size_t	 i;

	for (i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
		tc(ints[i].in, strlen(ints[i].in));
		mem_init(&m, ints[i].in, strlen(ints[i].in), 0);
		json_init(&j, mem_jrd, &m);
		v = 99;
		CHECK(json_get_int(&j, &v) == ints[i].rc);
		CHECK(v == (ints[i].rc == 0 ? ints[i].v : 99));
	}
	for (i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
		tc(strs[i].in, strlen(strs[i].in));
		mem_init(&m, strs[i].in, strlen(strs[i].in), 0);
		json_init(&j, mem_jrd, &m);
		CHECK(json_get_str(&j, out, strs[i].sz) == strs[i].rc);
		if (strs[i].rc == 0)
			CHECK_STR(out, strs[i].out);
		else
			CHECK(strstr(j.msg, strs[i].out) != NULL);
	}
}

/* == 2b. Graph-shaped documents (§11) ===================================== */

#define ITEM(fsi, tail) "{\"@odata.context\":\"https://graph.microsoft.com/" \
	"v1.0/$metadata#drives('d')/items/$entity\",\"createdBy\":{\"user\":" \
	"{\"displayName\":\"A \\\"B\\\"\",\"id\":\"1\"},\"application\":" \
	"{\"id\":\"2\"}},\"id\":\"D8EBBD13A0551216!123\",\"name\":\"R\\u00e9" \
	"sum\\u00E9 \\ud83d\\ude00.txt\"," fsi "\"size\":5497558138880," \
	"\"eTag\":\"\\\"{X},1\\\"\",\"cTag\":\"c:{X},2\",\"createdDateTime\":" \
	"\"2024-01-02T03:04:05Z\",\"lastModifiedDateTime\":" \
	"\"2024-05-06T07:08:09.123Z\",\"parentReference\":{\"driveId\":" \
	"\"d\",\"path\":\"/drive/root:\",\"deep\":[[[{\"a\":[1,2,{\"b\":" \
	"null}]}]]]},\"file\":{\"mimeType\":\"text/plain\",\"hashes\":" \
	"{\"sha1Hash\":\"AA\",\"quickXorHash\":" \
	"\"YRDDGAAAAAAAAAAAAwAAAAAAAAA=\",\"crc32Hash\":\"0\"}," \
	"\"processingMetadata\":false}," tail "\"shared\":{\"scope\":\"u\"}}"
#define FSI	"\"fileSystemInfo\":{\"createdDateTime\":" \
	"\"2020-01-01T00:00:00Z\",\"lastModifiedDateTime\":" \
	"\"2021-02-03T04:05:06Z\"},"

static int
item_parse(const char *doc, size_t step, struct item *it)
{
	static struct json j;
	struct mem m;

	mem_init(&m, doc, strlen(doc), step);
	json_init(&j, mem_jrd, &m);
	return json_next(&j) == JSON_OBJ && parse_item_body(&j, it) == 0 &&
	    json_next(&j) == JSON_END ? 0 : -1;
}

static int
page_collect(const struct item *it, void *arg)
{
	char	*names = arg;

	bcat(names, 256, it->name, strlen(it->name));
	if (it->type == ITEM_FOLDER)
		bcat(names, 256, "/", 1);
	bcat(names, 256, "|", 1);
	return 0;
}

static void
test_graph_docs(void)
{
	static const struct {
		const char *doc;
		int	 rc, type, root;
		int64_t	 size, children;
		const char *modified;
	} t[] = {
		{ ITEM(FSI, ""), 0, ITEM_FILE, 0, INT64_C(5497558138880), -1,
		    "2021-02-03T04:05:06Z" },
		{ ITEM("", FSI), 0, ITEM_FILE, 0, INT64_C(5497558138880), -1,
		    "2021-02-03T04:05:06Z" },
		{ ITEM("", ""), 0, ITEM_FILE, 0, INT64_C(5497558138880), -1,
		    "2024-05-06T07:08:09.123Z" },
		{ "{\"id\":\"F\",\"name\":\"f\",\"size\":0,\"folder\":{\"childCount\":42,"
		    "\"view\":{\"sortBy\":\"name\"}}}", 0, ITEM_FOLDER, 0, 0,
		    42, "" },
		{ "{\"id\":\"R\",\"root\":{},\"folder\":{\"childCount\":0}}", 0,
		    ITEM_FOLDER, 1, 0, 0, "" },
		{ "{\"id\":\"R\",\"root\":{}}", 0, ITEM_FOLDER, 1, 0, -1, "" },
		{ "{\"id\":\"P\",\"name\":\"n\",\"package\":{\"type\":\"oneNote\"},\"folder\":"
		    "{\"childCount\":3}}", 0, ITEM_PACKAGE, 0, 0, 3, "" },
		{ "{\"id\":\"P\",\"name\":\"n\",\"folder\":{\"childCount\":3},\"package\":"
		    "{\"type\":\"oneNote\"}}", 0, ITEM_PACKAGE, 0, 0, 3, "" },
		{ "{\"id\":5}", -1, 0, 0, 0, 0, "" },
		/* names and fields odcp must not act on (item_check) */
		{ "{\"id\":\"a\",\"file\":{}}", -1, 0, 0, 0, 0, "" },
		{ "{\"id\":\"a\",\"name\":\"\",\"file\":{}}", -1, 0, 0, 0, 0, "" },
		{ "{\"id\":\"a\",\"name\":\".\",\"folder\":{}}", -1, 0, 0, 0, 0, "" },
		{ "{\"id\":\"a\",\"name\":\"..\",\"folder\":{}}", -1, 0, 0, 0, 0, "" },
		{ "{\"id\":\"a\",\"name\":\"a/b\",\"file\":{}}", -1, 0, 0, 0, 0, "" },
		{ "{\"id\":\"a\",\"name\":\"a\\nb\",\"file\":{}}", -1, 0, 0, 0, 0, "" },
		{ "{\"id\":\"a\",\"name\":\"a\\u001b[2J\",\"file\":{}}", -1, 0, 0, 0, 0, "" },
		{ "{\"id\":\"a\",\"name\":\"ok\",\"lastModifiedDateTime\":"
		    "\"2024-01-02T03:04:05Z\\nF\\t6\",\"file\":{}}", -1, 0, 0, 0, 0, "" },
		{ "{\"id\":\"a\",\"name\":\"ok\",\"file\":{\"hashes\":"
		    "{\"quickXorHash\":\"x\\ty\"}}}", -1, 0, 0, 0, 0, "" },
		{ "{\"size\":\"x\"}", -1, 0, 0, 0, 0, "" },
		{ "{\"file\":[]}", -1, 0, 0, 0, 0, "" },
		{ "{\"id\":\"a\",\"folder\":{", -1, 0, 0, 0, 0, "" },
	};
	static const char p1[] = "{\"value\":[{\"id\":\"1\",\"name\":\"a b\","
	    "\"fi", p2[] = "le\":{}},{\"id\":\"2\",\"name\":\"sub\",\"folder\":"
	    "{}}],\"@odata.nextLink\":\"https://g.example/next?p=2\"}";
	static struct item it;
	static struct conn c;
	static struct http_resp r;
	static char page[2048], next[URL_MAX], names[256];
	struct mem m;
	size_t	 i, step;
	long	 count;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		tc(t[i].doc, strlen(t[i].doc));
		for (step = 0; step <= 1; step++) {
			CHECK(item_parse(t[i].doc, step, &it) == t[i].rc);
			if (t[i].rc != 0)
				continue;
			CHECK(it.type == t[i].type && it.root == t[i].root);
			CHECK(it.size == t[i].size);
			CHECK(it.children == t[i].children);
			CHECK_STR(it.modified, t[i].modified);
		}
	}
	strcpy(tcase, "driveItem fields");
	CHECK(item_parse(ITEM(FSI, ""), 1, &it) == 0);
	CHECK_STR(it.id, "D8EBBD13A0551216!123");
	CHECK_STR(it.name, "R\xc3\xa9sum\xc3\xa9 \xf0\x9f\x98\x80.txt");
	CHECK_STR(it.qxh, "YRDDGAAAAAAAAAAAAwAAAAAAAAA=");
	CHECK_STR(it.mime, "text/plain");
	CHECK_STR(it.etag, "\"{X},1\"");
	CHECK_STR(it.ctag, "c:{X},2");
	CHECK_STR(it.created, "2024-01-02T03:04:05Z");
	CHECK(it.size > INT64_C(0xffffffff));

	/* A listing page through the whole stack: chunks, JSON, items. */
	strcpy(tcase, "listing page over chunked HTTP");
	sprintf(page, CHUNKED "%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n",
	    (unsigned)strlen(p1), p1, (unsigned)strlen(p2), p2);
	for (step = 0; step <= 1; step++) {
		mem_conn(&c, &m, page, strlen(page), step);
		names[0] = '\0';
		CHECK(http_recv_head(&c, &r, 0) == 0);
		CHECK(parse_page(&c, &r, page_collect, names, next,
		    sizeof(next), &count, 0) == 0);
		CHECK(count == 2);
		CHECK_STR(names, "a b|sub/|");
		CHECK_STR(next, "https://g.example/next?p=2");
		CHECK(r.done);
	}
}

/*
 * nextExpectedRanges in the shapes graph-api.md 7.2 describes: the first
 * missing byte is the smallest start, with its end; a range outside the
 * file, or one that is not "a-b" / "a-", is refused.
 */
static void
test_session_ranges(void)
{
	static const struct {
		const char *json;
		int64_t	 next, end;
		int	 ok;
	} t[] = {
		{ "{\"nextExpectedRanges\":[\"0-\"]}", 0, -1, 1 },
		{ "{\"expirationDateTime\":\"2030-01-01T00:00:00.123Z\","
		    "\"nextExpectedRanges\":[\"327680-\"]}", 327680, -1, 1 },
		{ "{\"nextExpectedRanges\":[\"12345-55152\"]}", 12345, 55152, 1 },
		{ "{\"nextExpectedRanges\":[\"700000-799999\",\"100-199\"]}",
		    100, 199, 1 },
		{ "{\"nextExpectedRanges\":[]}", -1, -1, 1 },
		{ "{\"uploadUrl\":\"https://up.example/x\"}", -1, -1, 1 },
		{ "{\"nextExpectedRanges\":[\"999999-\"]}", 999999, -1, 1 },
		{ "{\"nextExpectedRanges\":[\"1000000-\"]}", 0, 0, 0 },
		{ "{\"nextExpectedRanges\":[\"0-1000000\"]}", 0, 0, 0 },
		{ "{\"nextExpectedRanges\":[\"5\"]}", 0, 0, 0 },
		{ "{\"nextExpectedRanges\":[\"9-3\"]}", 0, 0, 0 },
		{ "{\"nextExpectedRanges\":[\"-5\"]}", 0, 0, 0 },
		{ "{\"nextExpectedRanges\":\"0-\"}", 0, 0, 0 },
		{ "{\"nextExpectedRanges\":[0]}", 0, 0, 0 },
		/* ranges that touch or overlap are one run */
		{ "{\"nextExpectedRanges\":[\"327680-328680\",\"328681-\"]}",
		    327680, -1, 1 },
		{ "{\"nextExpectedRanges\":[\"500-599\",\"0-99\",\"100-299\","
		    "\"250-400\"]}", 0, 400, 1 },
		{ "{\"nextExpectedRanges\":[\"0-99\",\"101-\"]}", 0, 99, 1 },
		{ "{\"nextExpectedRanges\":[\"10-999999\"]}", 10, -1, 1 },
		{ "{\"nextExpectedRanges\":[\"0-1\",\"2-3\",\"4-5\",\"6-7\","
		    "\"8-9\",\"10-11\",\"12-13\",\"14-15\",\"16-17\",\"18-19\","
		    "\"20-21\",\"22-23\",\"24-25\",\"26-27\",\"28-29\",\"30-31\","
		    "\"32-33\",\"34-35\",\"36-37\",\"38-39\",\"40-41\",\"42-43\","
		    "\"44-45\",\"46-47\",\"48-49\",\"50-51\",\"52-53\",\"54-55\","
		    "\"56-57\",\"58-59\",\"60-61\",\"62-63\"]}", 0, 63, 1 },
		{ "{\"nextExpectedRanges\":[\"0-1\",\"2-3\",\"4-5\",\"6-7\","
		    "\"8-9\",\"10-11\",\"12-13\",\"14-15\",\"16-17\",\"18-19\","
		    "\"20-21\",\"22-23\",\"24-25\",\"26-27\",\"28-29\",\"30-31\","
		    "\"32-33\",\"34-35\",\"36-37\",\"38-39\",\"40-41\",\"42-43\","
		    "\"44-45\",\"46-47\",\"48-49\",\"50-51\",\"52-53\",\"54-55\","
		    "\"56-57\",\"58-59\",\"60-61\",\"62-63\",\"64-\"]}", 0, 0, 0 },
	};
	static char buf[1024];
	static struct upload u;
	struct http_resp r;
	struct conn c;
	struct mem m;
	int64_t	 next, end;
	size_t	 i;
	int	 rc;

	strcpy(tcase, "parse_session");
	u.size = 1000000;
	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		tc(t[i].json, strlen(t[i].json));
		bfmt(buf, sizeof(buf), OK200 "Content-Length: %zu\r\n\r\n%s",
		    strlen(t[i].json), t[i].json);
		mem_conn(&c, &m, buf, strlen(buf), 0);
		CHECK(http_recv_head(&c, &r, 0) == 0);
		u.expires = 0;
		err_begin();
		rc = parse_session(&c, &r, &u, 1, &next, &end);
		err_end();
		CHECK(rc == (t[i].ok ? 0 : -1));
		if (t[i].ok) {
			CHECK(next == t[i].next && end == t[i].end);
		}
	}
	CHECK(u.expires == 0);
	tc(t[1].json, strlen(t[1].json));
	bfmt(buf, sizeof(buf), OK200 "Content-Length: %zu\r\n\r\n%s",
	    strlen(t[1].json), t[1].json);
	mem_conn(&c, &m, buf, strlen(buf), 0);
	CHECK(http_recv_head(&c, &r, 0) == 0);
	CHECK(parse_session(&c, &r, &u, 0, &next, &end) == 0);
	CHECK(u.expires == INT64_C(1893456000));
}

/* == 3. JSONTestSuite ===================================================== */

/*
 * y_ files rejected because of odcp's fixed limits, with the message
 * each must give.  No published y_ file nests deeper than
 * JSON_DEPTH_MAX (64) or holds a string over JSON_STR_MAX (16 KB), so
 * the list is empty; any y_ rejection is a failure.
 */
static const struct {
	const char *file, *msg;
} y_limits[] = {
	{ NULL, NULL }
};

/*
 * The i_ files odcp accepts: numbers are kept as text, so their range
 * does not matter.  It rejects every other i_ file: strict UTF-8 (no
 * overlongs, encoded surrogates, Latin-1, UTF-16 or BOM), no unpaired
 * surrogate escapes, and 500 levels exceed JSON_DEPTH_MAX.
 */
static const char *i_accepted[] = {
	"i_number_double_huge_neg_exp.json", "i_number_huge_exp.json",
	"i_number_neg_int_huge_exp.json", "i_number_pos_double_huge_exp.json",
	"i_number_real_neg_overflow.json", "i_number_real_pos_overflow.json",
	"i_number_real_underflow.json", "i_number_too_big_neg_int.json",
	"i_number_too_big_pos_int.json", "i_number_very_big_negative_int.json",
	NULL
};

static void
on_alarm(int sig)
{
	static const char m[] = "unit: json corpus file hangs: ";
	ssize_t	 w;

	(void)sig;
	w = write(2, m, sizeof(m) - 1);
	w = write(2, tcase, strlen(tcase));
	(void)w;
	_exit(1);
}

/* Parse a document to its end; 1 if accepted, 0 if JSON_ERR. */
static int
json_doc(const unsigned char *p, size_t len, size_t step, char *msg,
    size_t msgsz)
{
	static struct json j;
	struct mem m;
	enum json_ev ev;

	mem_init(&m, p, len, step);
	json_init(&j, mem_jrd, &m);
	while ((ev = json_next(&j)) != JSON_END && ev != JSON_ERR)
		;
	snprintf(msg, msgsz, "%s", j.msg);
	return ev == JSON_END;
}

/* A copy of data whose last byte sits right before a PROT_NONE page. */
static unsigned char *
guarded(const unsigned char *data, size_t n, void **map, size_t *maplen)
{
	size_t	 pg = (size_t)sysconf(_SC_PAGESIZE), span;
	int	 fd;

	span = (n + pg - 1) / pg * pg;
	*maplen = span + pg;
	if ((fd = open("/dev/zero", O_RDWR)) == -1 ||
	    (*map = mmap(NULL, *maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE,
	    fd, 0)) == MAP_FAILED ||
	    mprotect((char *)*map + span, pg, PROT_NONE) == -1) {
		perror("unit: guard page");
		exit(2);
	}
	close(fd);
	memcpy((char *)*map + span - n, data, n);
	return (unsigned char *)*map + span - n;
}

static int
name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int
listed(const char *const *list, const char *name)
{
	for (; *list != NULL; list++)
		if (strcmp(*list, name) == 0)
			return 1;
	return 0;
}

static void
test_json_suite(void)
{
	static char path[LPATH_MAX], msg[2][128];
	static unsigned char data[300000];
	const char *dir = getenv("ODCP_JSONSUITE");
	char	**names = NULL, *s;
	struct dirent *de;
	DIR	*d;
	void	*map;
	unsigned char *p;
	size_t	 n = 0, i, k, len, maplen;
	int	 fd, ok[2], y = 0, yok = 0, nn = 0, nok = 0, ia = 0, ir = 0;
	ssize_t	 r;

	if (dir == NULL || *dir == '\0')
		dir = "../shared/testdata/jsontestsuite";
	snprintf(tcase, sizeof(tcase), "%s", dir);
	CHECK((d = opendir(dir)) != NULL);	/* missing: a failure */
	if (d == NULL) {
		printf("json corpus: no JSONTestSuite in %s: set ODCP_JSONSUITE "
		    "to its directory (tests/run looks beside this checkout "
		    "and beside the one it was cloned from)\n", dir);
		return;
	}
	while ((de = readdir(d)) != NULL) {
		s = de->d_name;
		if ((s[0] != 'y' && s[0] != 'n' && s[0] != 'i') || s[1] != '_')
			continue;
		names = realloc(names, (n + 1) * sizeof(*names));
		if (names == NULL || (names[n++] = strdup(s)) == NULL)
			exit(2);
	}
	closedir(d);
	qsort(names, n, sizeof(*names), name_cmp);
	CHECK(n >= 318);		/* 95 y_, 188 n_, 35 i_ published */
	signal(SIGALRM, on_alarm);
	for (i = 0; i < n; i++) {
		s = names[i];
		snprintf(tcase, sizeof(tcase), "%s", s);
		bfmt(path, sizeof(path), "%s/%s", dir, s);
		CHECK((fd = open(path, O_RDONLY)) != -1);
		if (fd == -1)
			continue;
		r = read(fd, data, sizeof(data));
		close(fd);
		CHECK(r >= 0 && (size_t)r < sizeof(data));
		len = r > 0 ? (size_t)r : 0;
		p = guarded(data, len, &map, &maplen);
		alarm(20);
		ok[0] = json_doc(p, len, 0, msg[0], sizeof(msg[0]));
		ok[1] = json_doc(p, len, 1, msg[1], sizeof(msg[1]));
		alarm(0);
		munmap(map, maplen);
		CHECK(ok[0] == ok[1]);
		CHECK_STR(msg[0], msg[1]);
		if (s[0] == 'y') {
			y++;
			yok += ok[0];
			for (k = 0; y_limits[k].file != NULL; k++)
				if (strcmp(y_limits[k].file, s) == 0)
					break;
			if (y_limits[k].file != NULL)
				CHECK(!ok[0] &&
				    strstr(msg[0], y_limits[k].msg) != NULL);
			else
				CHECK(ok[0]);
			if (!ok[0])
				fprintf(stderr, "\t%s: %s\n", s, msg[0]);
		} else if (s[0] == 'n') {
			nn++;
			nok += !ok[0];
			CHECK(!ok[0]);
		} else {
			ia += ok[0];
			ir += !ok[0];
			CHECK(ok[0] == listed(i_accepted, s));
		}
	}
	signal(SIGALRM, SIG_DFL);
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	fprintf(stderr, "json corpus: y %d/%d accepted, n %d/%d rejected, "
	    "i: %d accepted %d rejected\n", yok, y, nok, nn, ia, ir);
}

/* == 4. Encoders and small parsers ======================================== */

static const struct {
	const char *in, *out;
} pathenc[] = {
	{ "/a b", "/a%20b" }, { "#", "%23" }, { "%", "%25" }, { "+", "%2B" },
	{ "%20", "%2520" }, { "\xc3\xa9", "%C3%A9" }, { "", "" },
	{ "/ABCXYZ/abcxyz/0189-._~", "/ABCXYZ/abcxyz/0189-._~" },
	{ "?:'&=;,!$()*@[]", "%3F%3A%27%26%3D%3B%2C%21%24%28%29%2A%40%5B%5D" },
}, formenc[] = {
	{ "a b+c&d=e/f~g", "a%20b%2Bc%26d%3De%2Ff~g" },
	{ "\xc3\xa9", "%C3%A9" },
	{ "Files.Read offline_access", "Files.Read%20offline_access" },
}, jsonesc[] = {
	{ "plain \xc3\xa9", "plain \xc3\xa9" }, { "a\"b", "a\\\"b" },
	{ "back\\slash", "back\\\\slash" },
	{ "\x01\n\x1f\x7f", "\\u0001\\u000a\\u001f\x7f" },
}, b64[] = {		/* RFC 4648 10, and the two alphabets' last chars */
	{ "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
	{ "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" },
	{ "foobar", "Zm9vYmFy" }, { "\xfb\xff", "+/8=" },
	{ "\xfb\xef\xff", "++//" },
};
static const char *b64url[] = { "", "Zg", "Zm8", "Zm9v", "Zm9vYg",
	"Zm9vYmE", "Zm9vYmFy", "-_8", "--__" };

static void
test_encoders(void)
{
	char	 out[256], dec[256];
	size_t	 i, n;

	for (i = 0; i < sizeof(pathenc) / sizeof(pathenc[0]); i++) {
		tc(pathenc[i].in, strlen(pathenc[i].in));
		n = strlen(pathenc[i].out);
		CHECK(path_encode(out, sizeof(out), pathenc[i].in) == 0);
		CHECK_STR(out, pathenc[i].out);
		CHECK(path_encode(out, n + 1, pathenc[i].in) == 0);
		CHECK(n == 0 || path_encode(out, n, pathenc[i].in) == -1);
	}
	for (i = 0; i < sizeof(formenc) / sizeof(formenc[0]); i++) {
		tc(formenc[i].in, strlen(formenc[i].in));
		CHECK(form_encode(out, sizeof(out), formenc[i].in) == 0);
		CHECK_STR(out, formenc[i].out);
		strcpy(dec, out);
		CHECK(pct_decode(dec, 1) == 0);
		CHECK_STR(dec, formenc[i].in);
	}
	/* URLs from the service go into a request line as they are */
	strcpy(tcase, "url_parse");
	{
		static const char *bad[] = { "http://h/x", "https://h/a b",
		    "https://h/a\r\nX-Inj: 1", "https://h/\x01", "https://u@h/x",
		    "https://h:99x/x", "https://:443/x", "https://h?q" };
		struct url u;

		CHECK(url_parse("https://h.example:8443/p?q=%20", &u) == 0);
		CHECK_STR(u.host, "h.example");
		CHECK_STR(u.port, "8443");
		CHECK_STR(u.target, "/p?q=%20");
		CHECK_STR(u.hostport, "h.example:8443");
		CHECK(url_parse("https://h", &u) == 0 && strcmp(u.target, "/") == 0);
		for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			tc(bad[i], strlen(bad[i]));
			err_begin();
			CHECK(url_parse(bad[i], &u) == -1 && net_permanent);
			CHECK(strstr(err_end(), bad[i]) == NULL);  /* not echoed */
		}
		strcpy(tcase, "location_plain");
	}
	/* a Location: raw non-ASCII, spaces and brackets encoded, '%' kept */
	strcpy(tcase, "location_plain");
	CHECK(pct_encode(out, sizeof(out), "https://h/d l/[\xc3\xa9]?a=%2B&b",
	    location_plain) == 0);
	CHECK_STR(out, "https://h/d%20l/%5B%C3%A9%5D?a=%2B&b");
	strcpy(tcase, "form_decode");
	strcpy(dec, "a+b%41%c3%A9");
	CHECK(pct_decode(dec, 1) == 0);
	CHECK_STR(dec, "a bA\xc3\xa9");
	strcpy(dec, "bad%4");
	CHECK(pct_decode(dec, 1) == -1);
	strcpy(dec, "bad%zz");
	CHECK(pct_decode(dec, 1) == -1);
	for (i = 0; i < sizeof(jsonesc) / sizeof(jsonesc[0]); i++) {
		tc(jsonesc[i].in, strlen(jsonesc[i].in));
		CHECK(json_escape(out, sizeof(out), jsonesc[i].in) == 0);
		CHECK_STR(out, jsonesc[i].out);
	}
	CHECK(json_escape(out, 8, "\x01\x02") == -1);
	for (i = 0; i < sizeof(b64) / sizeof(b64[0]); i++) {
		tc(b64[i].out, strlen(b64[i].out));
		n = strlen(b64[i].in);
		base64(out, (const unsigned char *)b64[i].in, n, 0);
		CHECK_STR(out, b64[i].out);
		base64(out, (const unsigned char *)b64[i].in, n, 1);
		CHECK_STR(out, b64url[i]);
	}
}

static void
test_paths(void)
{
	static const struct {
		const char *in, *out;	/* NULL: refused */
	} t[] = {
		{ "", "/" }, { "/", "/" }, { "///", "/" }, { "a", "/a" },
		{ "/a/b/", "/a/b" }, { "a//b", "/a/b" },
		{ "//a///b//", "/a/b" }, { "/.a/..b/.../", "/.a/..b/..." },
		{ "/caf\xc3\xa9 x", "/caf\xc3\xa9 x" },
		{ ".", NULL }, { "..", NULL }, { "/a/./b", NULL },
		{ "a/..", NULL }, { "a:b", NULL }, { "a*", NULL },
		{ "a?", NULL }, { "a\"b", NULL }, { "a<b", NULL },
		{ "a>b", NULL }, { "a\\b", NULL }, { "x/a|b", NULL },
	};
	static const struct {
		const char *path, *sub, *url;
	} u[] = {
		{ "/", NULL, "/root" }, { "/", "children", "/root/children" },
		{ "/a b/c#", NULL, "/root:/a%20b/c%23" },
		{ "/a", "content", "/root:/a:/content" },
		{ "/x/y+z", "createUploadSession",
		    "/root:/x/y%2Bz:/createUploadSession" },
	};
	static struct graph g;
	static struct profile p;
	char	 out[64], big[64], url[256];
	size_t	 i;
	int	 rc;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		tc(t[i].in, strlen(t[i].in));
		err_begin();
		rc = path_norm(out, sizeof(out), t[i].in);
		err_end();
		CHECK(rc == (t[i].out ? 0 : -1));
		if (t[i].out)
			CHECK_STR(out, t[i].out);
	}
	/* The result must fit in sz too: it can be a byte longer than in. */
	strcpy(tcase, "path_norm into 8 bytes");
	memset(big, 'X', sizeof(big));
	err_begin();
	rc = path_norm(big, 8, "abcdefg");
	err_end();
	CHECK(big[8] == 'X' && big[9] == 'X');
	CHECK(rc == -1 || strlen(big) < 8);

	bfmt(g.base, sizeof(g.base), "https://g.example/v1.0/me/drive");
	for (i = 0; i < sizeof(u) / sizeof(u[0]); i++) {
		tc(u[i].url, strlen(u[i].url));
		graph_url(&g, url, sizeof(url), u[i].path, u[i].sub);
		CHECK(strncmp(url, g.base, strlen(g.base)) == 0);
		CHECK_STR(url + strlen(g.base), u[i].url);
	}

	strcpy(tcase, "graph_init");
	conf_defaults(&p);
	bfmt(p.graph_url, sizeof(p.graph_url), "https://g.example/v1.0");
	CHECK(graph_init(&g, &p, NULL) == 0);
	CHECK_STR(g.base, "https://g.example/v1.0/me/drive");
	strcpy(p.user, "a@b.example");
	CHECK(graph_init(&g, &p, NULL) == 0);
	CHECK_STR(g.base, "https://g.example/v1.0/users/a%40b.example/drive");
	strcpy(p.drive, "b!x-Y_z");
	CHECK(graph_init(&g, &p, NULL) == 0);
	CHECK_STR(g.base, "https://g.example/v1.0/drives/b%21x-Y_z");
	p.drive[0] = p.user[0] = '\0';
	strcpy(p.secret, "s");
	err_begin();
	CHECK(graph_init(&g, &p, NULL) == -1);
	CHECK(strstr(err_end(), "there is no /me") != NULL);

	/* what a log line shows of a URL: never a secret path, nor a
	 * user:password */
	{
		static const struct {
			const char *url, *shown;
			int	 trusted;
		} l[] = {
			{ "https://up.example/x/y?tempauth=s", "https://up.example/<redacted>", 0 },
			{ "https://up.example?tempauth=s", "https://up.example/<redacted>", 0 },
			{ "https://u:pw@up.example/x", "https://<redacted>@up.example/<redacted>", 0 },
			{ "https://u:p@w@up.example:8443/x", "https://<redacted>@up.example:8443/<redacted>", 0 },
			{ "https://g.example/v1.0/me?a=b", "https://g.example/v1.0/me?a=b", 1 },
			{ "https://u:pw@g.example/v1.0/me", "https://<redacted>@g.example/v1.0/me", 1 },
		};
		char	 out[256];
		size_t	 i;

		for (i = 0; i < sizeof(l) / sizeof(l[0]); i++) {
			tc(l[i].url, strlen(l[i].url));
			log_url(out, sizeof(out), l[i].url, l[i].trusted);
			CHECK_STR(out, l[i].shown);
		}
	}
}

static void
test_numbers(void)
{
	static const struct {
		const char *s;
		int64_t	 min, max;
		int	 rc;
		int64_t	 v;
	} pi[] = {
		{ "0", 0, 10, 0, 0 }, { "10", 0, 10, 0, 10 },
		{ "007", 0, 10, 0, 7 }, { "-5", -10, 10, 0, -5 },
		{ "-0", 0, 0, 0, 0 },
		{ "9223372036854775807", 0, INT64_MAX, 0, INT64_MAX },
		{ "-9223372036854775807", -INT64_MAX, 0, 0, -INT64_MAX },
		{ "11", 0, 10, -1, 0 }, { "-1", 0, 10, -1, 0 },
		{ "9223372036854775808", 0, INT64_MAX, -1, 0 },
		{ "99999999999999999999", 0, INT64_MAX, -1, 0 },
		{ "", 0, 10, -1, 0 }, { "-", 0, 10, -1, 0 },
		{ "+1", 0, 10, -1, 0 }, { " 1", 0, 10, -1, 0 },
		{ "1 ", 0, 10, -1, 0 }, { "1a", 0, 10, -1, 0 },
		{ "0x10", 0, 100, -1, 0 }, { "--1", -10, 10, -1, 0 },
	};
	static const struct {
		const char *s;		/* the input, and the output if 0 */
		int64_t	 t;		/* -1 with fmt NULL: refused */
		const char *fmt;
	} tp[] = {
		{ "1970-01-01T00:00:00Z", 0, NULL },
		{ "2024-01-02T03:04:05Z", 1704164645, NULL },
		{ "2024-01-02T03:04:05.1234567Z", 1704164645,
		    "2024-01-02T03:04:05Z" },
		{ "2024-01-02T03:04:05.5Z", 1704164645,
		    "2024-01-02T03:04:05Z" },
		{ "2000-02-29T12:00:00Z", 951825600, NULL },
		{ "2038-01-19T03:14:08Z", INT64_C(2147483648), NULL },
		{ "2100-03-01T00:00:00Z", INT64_C(4107542400), NULL },
		{ "1969-12-31T23:59:59Z", -1, "1969-12-31T23:59:59Z" },
		{ "2024-13-01T00:00:00Z", -1, NULL },
		{ "2024-00-01T00:00:00Z", -1, NULL },
		{ "2024-01-32T00:00:00Z", -1, NULL },
		{ "2024-01-01T24:00:00Z", -1, NULL },
		{ "2024-01-01T00:60:00Z", -1, NULL },
		{ "2024-01-01 00:00:00Z", -1, NULL },
		{ "2024-01-01T00:00Z", -1, NULL },
		{ "2024-1-01T00:00:00Z", -1, NULL },
		{ "garbage", -1, NULL }, { "", -1, NULL },
		/* UTC only, and nothing but [.fff]Z after the seconds */
		{ "2024-01-02T03:04:05+02:00", -1, NULL },
		{ "2024-01-02T03:04:05", -1, NULL },
		{ "2024-01-02T-1:04:05Z", -1, NULL },
	};
	char	 out[64];
	int64_t	 v, w;
	size_t	 i;
	int	 bad;

	for (i = 0; i < sizeof(pi) / sizeof(pi[0]); i++) {
		tc(pi[i].s, strlen(pi[i].s));
		v = 42;
		CHECK(parse_int(pi[i].s, pi[i].min, pi[i].max, &v) == pi[i].rc);
		CHECK(v == (pi[i].rc == 0 ? pi[i].v : 42));
	}
	for (i = 0; i < sizeof(tp) / sizeof(tp[0]); i++) {
		tc(tp[i].s, strlen(tp[i].s));
		bad = tp[i].t == -1 && tp[i].fmt == NULL;
		v = 42;
		CHECK(time_parse(tp[i].s, &v) == (bad ? -1 : 0));
		if (bad)
			continue;
		CHECK(v == tp[i].t);
		time_format(out, sizeof(out), v);
		CHECK_STR(out, tp[i].fmt ? tp[i].fmt : tp[i].s);
	}
	strcpy(tcase, "time round trip");
	for (v = -86400; v < INT64_C(4102444800); v += 9999991) {
		time_format(out, sizeof(out), v);
		CHECK(time_parse(out, &w) == 0 && w == v);
	}
}

static void
test_retry_wait(void)
{
	static const struct {
		const char *ra, *date;
		int64_t	 want;
	} t[] = {
		{ "0", "", 0 }, { "7", "", 7 }, { "119", "", 119 },
		{ "120", "", 120 }, { "900", "", 900 }, { "901", "", -1 },
		{ "86400", "", -1 },
		{ "Wed, 21 Oct 2015 07:28:30 GMT",
		    "Wed, 21 Oct 2015 07:28:00 GMT", 30 },
		{ "Sun, 01 Jan 2017 00:00:40 GMT",
		    "Sat, 31 Dec 2016 23:59:50 GMT", 50 },
		{ "Fri, 01 Mar 2024 00:00:30 GMT",
		    "Thu, 29 Feb 2024 23:59:00 GMT", 90 },
		{ "Thu, 29 Feb 2024 23:58:00 GMT",
		    "Thu, 29 Feb 2024 23:59:00 GMT", 0 },
		{ "Thu, 31 Dec 2099 23:59:59 GMT", "", -1 },
		/* the server's clock, not ours: an hour ahead, 20 s to wait */
		{ "Thu, 31 Dec 2099 23:00:20 GMT",
		    "Thu, 31 Dec 2099 23:00:00 GMT", 20 },
		{ "Fri, 31 Dec 1999 23:59:59 GMT", "", 0 },
		/* the obsolete forms a recipient must take (RFC 9110 5.6.7) */
		{ "Wednesday, 21-Oct-15 07:28:30 GMT",
		    "Wed, 21 Oct 2015 07:28:00 GMT", 30 },
		{ "Wed Oct 21 07:28:45 2015",
		    "Wed, 21 Oct 2015 07:28:00 GMT", 45 },
		{ "Wed Oct  1 07:28:45 2015",
		    "Wed Oct  1 07:28:00 2015", 45 },
		{ "Thursday, 31-Dec-99 23:59:59 GMT", "", 0 },
		{ "Wed, 21 Oct 2015 07:28:30 GMT",
		    "Sunday, 21-Oct-15 07:28:20 GMT", 10 },
		/* more seconds than 64 bits hold: too long, as 901 is */
		{ "9223372036854775808", "", -1 },
		{ "99999999999999999999999", "", -1 },
		/* not dates: backoff */
		{ "Wed, 21 Oct 2015 07:28:30 UTC", "", -2 },
		{ "Wednesday, 21-Oct-2015 07:28:30 GMT", "", -2 },
		{ "Wed Oct 21 07:28:45 2015 GMT", "", -2 },
		{ "Wed, 21 Foo 2015 07:28:30 GMT", "", -2 },
	};
	static struct http_resp r;
	int64_t	 v, lo;
	size_t	 i;
	int	 a, k;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		tc(t[i].ra, strlen(t[i].ra));
		memset(&r, 0, sizeof(r));
		strcpy(r.retry_after, t[i].ra);
		strcpy(r.date, t[i].date);
		v = retry_wait(&r, 0);
		if (t[i].want == -2) {		/* backoff: 1 s plus jitter */
			CHECK(v >= 1 && v <= 2);
		} else
			CHECK(v == t[i].want);
	}
	/* No usable Retry-After: 2^attempt (at most 32) plus jitter. */
	strcpy(tcase, "backoff");
	srand(1);
	memset(&r, 0, sizeof(r));
	strcpy(r.retry_after, "soon");
	for (a = 0; a < 10; a++) {
		lo = (int64_t)1 << (a < 5 ? a : 5);
		for (k = 0; k < 50; k++) {
			v = retry_wait(k % 2 ? &r : NULL, a);
			CHECK(v >= lo && v <= 2 * lo);
		}
	}
}

/* == 5. quickXorHash (graph-api.md 10.2) ================================== */

/*
 * upload_tap hashes each byte once, in order, though fragments are sent
 * again after a failure or overlap: "The quick brown fox ..." sent as
 * [0,10) [0,10) [5,20) [20,43) must hash as the whole sentence.
 */
static void
test_upload_tap(void)
{
	static struct upload u;
	const char *fox = "The quick brown fox jumps over the lazy dog";
	const unsigned char *p = (const unsigned char *)fox;

	strcpy(tcase, "upload_tap");
	memset(&u, 0, sizeof(u));
	qxh_init(&u.h);
	upload_tap(&u, 0, p, 10);
	upload_tap(&u, 0, p, 10);
	upload_tap(&u, 5, p + 5, 15);
	upload_tap(&u, 30, p + 30, 13);		/* a gap: not hashed */
	CHECK(u.hashed == 20);
	upload_tap(&u, 20, p + 20, 23);
	CHECK(u.hashed == 43);
	u.size = 43;
	u.fd = -1;
	CHECK(upload_hash(&u) == 0);		/* no second read of the file */
	CHECK_STR(u.qxh, "bMSlbysmxJL6S75XwfMcQZOpcr4=");
}

static void
test_qxh(void)
{
	static const struct {
		const char *what;	/* bytes, or "zero", "mod256", "hex:" */
		size_t	 len;
		const char *hash;
	} t[] = {
		{ "", 0, "AAAAAAAAAAAAAAAAAAAAAAAAAAA=" },
		{ "a", 1, "YQAAAAAAAAAAAAAAAQAAAAAAAAA=" },
		{ "abc", 3, "YRDDGAAAAAAAAAAAAwAAAAAAAAA=" },
		{ "Hello world", 11, "SCgDG9jwBhDc4Q1yawMZAAAAAAA=" },
		{ "The quick brown fox jumps over the lazy dog", 43,
		    "bMSlbysmxJL6S75XwfMcQZOpcr4=" },
		{ "zero", 64, "AAAAAAAAAAAAAAAAQAAAAAAAAAA=" },
		{ "mod256", 256, "QkGEfSisZcA7k+FCh71r2dbCayY=" },
		{ "mod256", 1048576, "QkGEfSisZcA7k+FCh7x72dbCayY=" },
		{ "zero", 20000000, "AAAAAAAAAAAAAAAAAC0xAQAAAAA=" },
		{ "hex:4a", 1, "SgAAAAAAAAAAAAAAAQAAAAAAAAA=" },
		{ "hex:b5b4", 2, "taAFAAAAAAAAAAAAAgAAAAAAAAA=" },
		{ "hex:d9fbb1841257b695857bc74e7dd19e1f", 16,
		    "O9tHLAghgSvYohKFyMMxnNCHaHg=" },
	};
	static const size_t pieces[] = { 0, 1, 2, 7, 160, 161 };  /* 0: all */
	unsigned char *buf;
	const char *w;
	struct qxh q;
	char	 out[29];
	size_t	 i, k, off, n;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		tc(t[i].hash, 28);
		w = t[i].what;
		if ((buf = calloc(1, t[i].len + 1)) == NULL)
			exit(2);
		for (k = 0; k < t[i].len; k++) {
			if (strcmp(w, "mod256") == 0)
				buf[k] = (unsigned char)k;
			else if (strncmp(w, "hex:", 4) == 0)
				buf[k] = (unsigned char)(hexval(w[4 + 2 * k]) <<
				    4 | hexval(w[5 + 2 * k]));
			else if (strcmp(w, "zero") != 0)
				buf[k] = (unsigned char)w[k];
		}
		for (k = 0; k < sizeof(pieces) / sizeof(pieces[0]); k++) {
			qxh_init(&q);
			for (off = 0; off < t[i].len; off += n) {
				n = pieces[k] ? pieces[k] : t[i].len;
				if (n > t[i].len - off)
					n = t[i].len - off;
				qxh_update(&q, buf + off, n);
			}
			qxh_final(&q, out);
			CHECK_STR(out, t[i].hash);
		}
		free(buf);
	}
}

/* == 6. Token store and configuration ===================================== */

static int
write_file(const char *path, const char *text)
{
	FILE	*f = fopen(path, "w");

	if (f == NULL)
		return -1;
	fputs(text, f);
	return fclose(f);
}

static void
test_tokens(const char *tmp)
{
	static struct profile p;
	static struct token t, u;
	char	 path[LPATH_MAX + 64];
	struct stat st;
	struct dirent *de;
	DIR	*d;
	int	 n = 0;
	mode_t	 um;

	strcpy(tcase, "token round trip");
	bfmt(p.dir, sizeof(p.dir), "%s/conf/odcp", tmp);   /* and its parent */
	strcpy(p.name, "default");
	CHECK(token_load(&p, &u) == 0 && u.refresh[0] == '\0');	/* none */
	strcpy(t.access, "eyJ0eXAi.acc=ess-1");
	memset(t.refresh, 'r', TOKEN_MAX - 1);		/* the longest */
	t.expires = 1700000000;
	um = umask(0);			/* the modes must not come from umask */
	CHECK(token_save(&p, &t) == 0);
	umask(um);
	CHECK(stat(p.dir, &st) == 0 && (st.st_mode & 0777) == 0700);
	bfmt(path, sizeof(path), "%s/conf", tmp);
	CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0700);
	bfmt(path, sizeof(path), "%s/default.token", p.dir);
	CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
	CHECK(token_load(&p, &u) == 0);
	CHECK_STR(u.access, t.access);
	CHECK(strcmp(u.refresh, t.refresh) == 0 && u.expires == t.expires);

	strcpy(tcase, "token save without an access token");
	t.access[0] = '\0';
	strcpy(t.refresh, "only-refresh");
	CHECK(token_save(&p, &t) == 0);
	CHECK(token_load(&p, &u) == 0);
	CHECK_STR(u.refresh, "only-refresh");
	CHECK(u.access[0] == '\0' && u.expires == 0);
	if ((d = opendir(p.dir)) != NULL) {	/* no temp file left behind */
		while ((de = readdir(d)) != NULL)
			n += strcmp(de->d_name, ".") != 0 &&
			    strcmp(de->d_name, "..") != 0;
		closedir(d);
	}
	CHECK(n == 1);

	strcpy(tcase, "token dir that exists");
	bfmt(p.dir, sizeof(p.dir), "%s/open", tmp);
	CHECK(mkdir(p.dir, 0755) == 0 && chmod(p.dir, 0755) == 0);
	CHECK(token_save(&p, &t) == 0);
	CHECK(stat(p.dir, &st) == 0 && (st.st_mode & 0777) == 0755);
	bfmt(path, sizeof(path), "%s/default.token", p.dir);
	CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
}

#define FRAG_MSG "fragment_size must be"

static void
test_conf(const char *tmp)
{
	static const struct {
		const char *text, *profile, *err;	/* err NULL: loads */
	} t[] = {
		{ "[default]\ncolour = blue\n", "default",
		    "config:2: unknown setting 'colour'" },
		{ "[x]\nfragment_size = 1000\n", "x", FRAG_MSG },
		{ "[x]\nfragment_size = 62914560\n", "x", FRAG_MSG },
		{ "[x]\nfragment_size = -327680\n", "x", FRAG_MSG },
		{ "[x]\nfragment_size = 10MB\n", "x", FRAG_MSG },
		{ "[x]\nfragment_size = 62586880\n", "x", NULL },
		{ "[x]\ntimeout = 0\n", "x", "timeout must be" },
		{ "[x]\nclient_secret = s\n", "x", "client_secret_file" },
		{ "[x\n", "x", "bad section line" },
		{ "[x]\njunk\n", "x", "expected key = value" },
		{ "[x]\n", "y", "unknown profile 'y'" },
		{ "timeout = 5\n[x]\n", "x", "before the first [profile]" },
		{ "[x]\n[y]\ncolour = 1\n", "x", "config:3: unknown setting" },
		{ "[y]\ntimeout = 0\n[x]\n", "x", "config:2: timeout must be" },
	};
	static struct profile p;
	char	 path[LPATH_MAX + 64];
	const char *msg;
	size_t	 i;
	int	 rc;

	bfmt(p.dir, sizeof(p.dir), "%s", tmp);
	bfmt(path, sizeof(path), "%s/config", tmp);
	strcpy(tcase, "no config file");
	strcpy(p.name, "default");
	CHECK(conf_load(&p) == 0 && p.timeout == TIMEOUT_DEFAULT);
	strcpy(p.name, "work");
	err_begin();
	CHECK(conf_load(&p) == -1);
	CHECK(strstr(err_end(), "unknown profile 'work'") != NULL);

	strcpy(tcase, "two profiles");
	CHECK(write_file(path, "# odcp configuration\n; comment\n\n"
	    "[default]\nclient_id = 1111-2222\ntimeout=30\n\n"
	    "  [ work ]  \n  tenant =  contoso.onmicrosoft.com  \n"
	    "drive = b!xyz\n# fragment_size = 1\nfragment_size = 655360\n"
	    "scope = Files.ReadWrite.All offline_access\n") == 0);
	strcpy(p.name, "default");
	CHECK(conf_load(&p) == 0);
	CHECK_STR(p.client_id, "1111-2222");
	CHECK(p.timeout == 30 && p.fragment == FRAGMENT_DEFAULT);
	CHECK_STR(p.tenant, TENANT_DEFAULT);
	CHECK(p.drive[0] == '\0');
	strcpy(p.name, "work");
	CHECK(conf_load(&p) == 0);
	CHECK_STR(p.tenant, "contoso.onmicrosoft.com");
	CHECK_STR(p.drive, "b!xyz");
	CHECK_STR(p.scope, "Files.ReadWrite.All offline_access");
	CHECK(p.fragment == 655360 && p.timeout == TIMEOUT_DEFAULT);
	CHECK_STR(p.client_id, ODCP_CLIENT_ID);

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		tc(t[i].text, strlen(t[i].text));
		CHECK(write_file(path, t[i].text) == 0);
		memset(&p, 0, sizeof(p));
		bfmt(p.dir, sizeof(p.dir), "%s", tmp);
		strcpy(p.name, t[i].profile);
		err_begin();
		rc = conf_load(&p);
		msg = err_end();
		CHECK(rc == (t[i].err ? -1 : 0));
		CHECK(t[i].err == NULL || strstr(msg, t[i].err) != NULL);
	}
	unlink(path);

	strcpy(tcase, "conf_secret");
	unsetenv("ODCP_CLIENT_SECRET");
	bfmt(p.secret_file, sizeof(p.secret_file), "%s/secret", tmp);
	CHECK(write_file(p.secret_file, "s3cr3t~value\r\n") == 0);
	CHECK(conf_secret(&p) == 0);
	CHECK_STR(p.secret, "s3cr3t~value");
	CHECK(write_file(p.secret_file, "") == 0);
	err_begin();
	CHECK(conf_secret(&p) == -1);
	CHECK(strstr(err_end(), "is empty") != NULL);
}

/* What main uses from §13: configuration directory, overrides, usage. */
static void
test_main_helpers(void)
{
	static const char *env[] = { "ODCP_CONFIG_DIR", "XDG_CONFIG_HOME",
	    "HOME" }, *want[] = { "/e", "/e/odcp", "/e/.config/odcp" };
	char	 out[256], home[256];
	const char *h = getenv("HOME");
	FILE	*f;
	size_t	 i, n;

	strcpy(tcase, "config_dir");
	bfmt(home, sizeof(home), "%s", h ? h : "");
	CHECK(config_dir("/opt", out, sizeof(out)) == 0);
	CHECK_STR(out, "/opt");
	for (i = 0; i < 3; i++)
		unsetenv(env[i]);
	for (i = 3; i-- > 0; ) {	/* the highest precedence last */
		setenv(env[i], "/e", 1);
		CHECK(config_dir(NULL, out, sizeof(out)) == 0);
		CHECK_STR(out, want[i]);
		unsetenv(env[i]);
	}
	if (h != NULL)
		setenv("HOME", home, 1);

	strcpy(tcase, "apply_overrides");
	unsetenv("ODCP_CLIENT_ID");
	unsetenv("ODCP_TENANT");
	conf_defaults(&P);
	{
		struct globals o;

		memset(&o, 0, sizeof(o));
		o.client_id = "cid";
		o.tenant = "contoso.example";
		o.cacert = "/ca.pem";
		o.timeout = "30";
		o.retries = "2";
		o.proxy = "http://u%3Ax:p%40ss+@proxy.example:3128/";
		CHECK(apply_overrides(&o) == 0);
		CHECK_STR(P.client_id, "cid");
		CHECK_STR(P.tenant, "contoso.example");
		CHECK(P.timeout == 30 && ca_file == P.cacert && retries == 2);
		CHECK_STR(proxy.host, "proxy.example");
		CHECK_STR(proxy.port, "3128");
		/* base64("u:x:p@ss+") */
		CHECK_STR(proxy.auth, "dTp4OnBAc3Mr");
		memset(&o, 0, sizeof(o));
		o.tenant = "bad tenant";
		err_begin();
		CHECK(apply_overrides(&o) == -1);
		CHECK(strstr(err_end(), "bad tenant 'bad tenant'") != NULL);
		o.tenant = "common";
		o.timeout = "0";
		err_begin();
		CHECK(apply_overrides(&o) == -1);
		CHECK(strstr(err_end(), "--timeout must be") != NULL);
		o.timeout = NULL;
		o.retries = "101";
		err_begin();
		CHECK(apply_overrides(&o) == -1);
		CHECK(strstr(err_end(), "--retries must be 0 to 100") != NULL);
		o.retries = NULL;
		o.proxy = "https://proxy.example:3128";
		err_begin();
		CHECK(apply_overrides(&o) == -1);
		CHECK(strstr(err_end(), "--proxy: only http:// proxies") != NULL);
		o.proxy = "socks5://proxy.example:1080";
		err_begin();
		CHECK(apply_overrides(&o) == -1);
		CHECK(strstr(err_end(), "--proxy: only http:// proxies are "
		    "supported (not TLS to the proxy, nor SOCKS)") != NULL);
		o.proxy = NULL;
		setenv("HTTPS_PROXY", "http://proxy.example:99999999", 1);
		err_begin();
		CHECK(apply_overrides(&o) == -1);
		CHECK(strstr(err_end(), "HTTPS_PROXY: bad port") != NULL);
		unsetenv("HTTPS_PROXY");
		o.proxy = "proxy.example";
		CHECK(apply_overrides(&o) == 0);
		CHECK_STR(proxy.port, "80");
		CHECK(proxy.auth[0] == '\0');
		o.proxy = "";
		CHECK(apply_overrides(&o) == 0 && proxy.host[0] == '\0');
		retries = RETRY_DEFAULT;
	}
	strcpy(tcase, "proxy_skip");
	{
		static const struct {
			const char *list, *host, *port;
			int	 skip;
		} np[] = {
			{ "*", "graph.microsoft.com", "443", 1 },
			{ "microsoft.com", "graph.microsoft.com", "443", 1 },
			{ ".microsoft.com", "graph.microsoft.com", "443", 1 },
			{ "microsoft.com", "notmicrosoft.com", "443", 0 },
			{ "a.example, microsoft.com:443", "graph.microsoft.com",
			    "443", 1 },
			{ "microsoft.com:8443", "graph.microsoft.com", "443", 0 },
			{ "localhost 127.0.0.1", "127.0.0.1", "8443", 1 },
			{ "", "localhost", "443", 0 },
			{ "GRAPH.Microsoft.com", "graph.microsoft.com", "443", 1 },
		};
		size_t	 k;

		for (k = 0; k < sizeof(np) / sizeof(np[0]); k++) {
			tc(np[k].list, strlen(np[k].list));
			no_proxy = np[k].list;
			CHECK(proxy_skip(np[k].host, np[k].port) == np[k].skip);
		}
		no_proxy = NULL;
		CHECK(proxy_skip("localhost", "443") == 0);
	}
	ca_file = NULL;

	strcpy(tcase, "parse_globals");
	{
		char	*av[] = { "odcp", "-vq", "-p", "work", "--cacert",
		    "/c.pem", "--timeout", "9", "ls", "-l", NULL };
		char	*bad[] = { "odcp", "--nope", "ls", NULL };
		struct globals o;
		int	 v = verbose, qq = quiet;

		optind = 1;
		opterr = 0;
		CHECK(parse_globals(10, av, &o) == 0);
		CHECK(optind == 8 && strcmp(av[optind], "ls") == 0);
		CHECK_STR(o.prof, "work");
		CHECK_STR(o.cacert, "/c.pem");
		CHECK_STR(o.timeout, "9");
		CHECK(verbose == v + 1 && quiet == 1 && o.cfg == NULL);
		verbose = v;
		quiet = qq;
		optind = 1;
		err_begin();
		CHECK(parse_globals(3, bad, &o) == -1);
		CHECK(strstr(err_end(), "unknown option --nope") != NULL);

		strcpy(tcase, "setup_profile");
		memset(&o, 0, sizeof(o));
		o.prof = ".hidden";
		err_begin();
		CHECK(setup_profile(&o) == -1);
		CHECK(strstr(err_end(), "bad profile name") != NULL);
		optind = 1;
	}

	strcpy(tcase, "wipe_secrets");
	strcpy(T.access, "secret");
	strcpy(P.secret, "secret");
	wipe_secrets();
	CHECK(T.access[0] == '\0' && P.secret[0] == '\0');

	strcpy(tcase, "usage");
	if ((f = tmpfile()) == NULL)
		exit(2);
	usage(f);
	rewind(f);
	n = fread(out, 1, sizeof(out) - 1, f);
	out[n] = '\0';
	fclose(f);
	CHECK(strncmp(out, "usage: odcp", 11) == 0);
}

/* == Runner =============================================================== */

int
main(int argc, char **argv)
{
	static char ev[65536];
	char	 tmp[] = "/tmp/odcp-unit.XXXXXX", cmd[64];

	if (argc == 3 && strcmp(argv[1], "-e") == 0) {
		json_events(argv[2], strlen(argv[2]), 0, ev, sizeof(ev), NULL,
		    0);
		printf("%s\n", ev);
		return 0;
	}
	pool_init();
	CHECK(pool[0].fd == -1 && pool[CONN_POOL - 1].fd == -1);
	test_http_recv();
	test_getline();
	test_http_body();
	test_http_send();
	test_json_events();
	test_json_limits();
	test_json_get();
	test_graph_docs();
	test_json_suite();
	test_encoders();
	test_paths();
	test_numbers();
	test_retry_wait();
	test_qxh();
	test_upload_tap();
	test_session_ranges();
	if (mkdtemp(tmp) == NULL)
		exit(2);
	test_tokens(tmp);
	test_conf(tmp);
	test_main_helpers();
	bfmt(cmd, sizeof(cmd), "rm -rf %s", tmp);
	if (system(cmd) != 0)
		fprintf(stderr, "unit: could not remove %s\n", tmp);
	printf("unit: %d passed, %d failed\n", npass, nfail);
	return nfail > 0;
}
