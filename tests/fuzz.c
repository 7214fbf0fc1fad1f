/*
 * libFuzzer harness for odcp's parsers.  It includes odcp.c, so every
 * static function is reachable.  Build from the repository root (odcp.c
 * needs realpath(3), so _XOPEN_SOURCE rather than _POSIX_C_SOURCE):
 *
 *	clang -std=c99 -g -O1 -fsanitize=fuzzer,address,undefined \
 *	    -fno-sanitize-recover=undefined \
 *	    -D_XOPEN_SOURCE=700 -D_FILE_OFFSET_BITS=64 \
 *	    -Ivendor/src/bearssl-0.6/inc -o /tmp/fuzz tests/fuzz.c \
 *	    vendor/build/cc/libbearssl.a
 *
 * The target is chosen by ODCP_FUZZ (json, item, page, session, drive,
 * gerror, auth, http, hpage, path, time, conf, token, queue, ca), or,
 * when it is unset, by the first input byte modulo the number of targets
 * (that byte is then not part of the data).  Run with -close_fd_mask=2
 * to keep odcp's own error lines off the terminal; sanitizer reports
 * still show.  `make fuzz` runs every target for FUZZTIME seconds.
 *
 *	ODCP_FUZZ=json /tmp/fuzz -close_fd_mask=2 -max_total_time=300 DIR
 */
#define ODCP_NO_MAIN
#include "../odcp.c"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);
int LLVMFuzzerInitialize(int *, char ***);

/* == Memory transport ==================================================== */

struct fmem {
	const unsigned char *p;
	size_t	 len, off, step;
};

static long
fmem_take(struct fmem *m, unsigned char *buf, size_t n)
{
	if (m->step && n > m->step)
		n = m->step;
	if (n > m->len - m->off)
		n = m->len - m->off;
	memcpy(buf, m->p + m->off, n);
	m->off += n;
	return (long)n;
}

static long
fmem_rd(struct conn *c, unsigned char *buf, size_t n)
{
	return fmem_take(c->arg, buf, n);
}

static long
fmem_wr(struct conn *c, const unsigned char *buf, size_t n)
{
	(void)c;
	(void)buf;
	return (long)n;
}

static long
fmem_jrd(void *ctx, unsigned char *buf, size_t n)
{
	return fmem_take(ctx, buf, n);
}

static struct conn fc;
static struct fmem fm;

/* A connection whose stream is p[0..len), served step bytes at a time. */
static void
fconn(const unsigned char *p, size_t len, size_t step)
{
	fm.p = p;
	fm.len = len;
	fm.off = 0;
	fm.step = step;
	fc.fd = -1;
	fc.err = 0;
	fc.roff = fc.rlen = 0;
	fc.rd = fmem_rd;
	fc.wr = fmem_wr;
	fc.arg = &fm;
	strcpy(fc.host, "fuzz");
}

/* A response head as http_recv_head would leave it for a body of len. */
static void
fresp(struct http_resp *r, size_t len)
{
	memset(r, 0, sizeof(*r));
	r->status = 200;
	r->clen = (int64_t)len;
	r->left = (int64_t)len;
	r->done = len == 0;
}

/*
 * Copy the data to a heap block of exactly its size, so that ASan sees
 * any read past its end, and NUL-terminated variants for string APIs.
 */
static unsigned char *
dupbytes(const uint8_t *d, size_t n)
{
	unsigned char *p = malloc(n ? n : 1);

	if (p == NULL)
		abort();
	memcpy(p, d, n);
	return p;
}

static char *
dupstr(const uint8_t *d, size_t n)
{
	char	*p = malloc(n + 1);

	if (p == NULL)
		abort();
	memcpy(p, d, n);
	p[n] = '\0';
	return p;
}

/* == Targets ============================================================= */

/* (a) the tokenizer: every event to the end, then the same under skip. */
static void
t_json(const uint8_t *d, size_t n)
{
	static struct json j;
	struct fmem m;
	enum json_ev ev;
	int	 i, prev_depth;
	size_t	 step = n ? (d[0] % 8) : 0;	/* 0: whole reads */

	m.p = d;
	m.len = n;
	m.off = 0;
	m.step = step;
	json_init(&j, fmem_jrd, &m);
	for (i = 0; i < 1000000; i++) {
		prev_depth = j.depth;
		ev = json_next(&j);
		if (ev < 0 || ev >= JSON_EV_MAX)
			abort();
		if (j.depth < 0 || j.depth > JSON_DEPTH_MAX)
			abort();
		if ((ev == JSON_KEY || ev == JSON_STR || ev == JSON_NUM) &&
		    (j.slen > JSON_STR_MAX || j.str[j.slen] != '\0'))
			abort();
		if (ev == JSON_OBJ_END || ev == JSON_ARR_END) {
			if (j.depth != prev_depth - 1)
				abort();
		}
		if (ev == JSON_END || ev == JSON_ERR)
			break;
	}
	if (ev == JSON_ERR && j.msg[0] == '\0')
		abort();
	/* the same document, skipping every value after a key */
	m.off = 0;
	json_init(&j, fmem_jrd, &m);
	for (i = 0; i < 1000000; i++) {
		ev = json_next(&j);
		if (ev == JSON_KEY || ev == JSON_ARR) {
			if (json_skip(&j) == -1)
				break;
		}
		if (ev == JSON_END || ev == JSON_ERR)
			break;
	}
	/* json_skip of the whole document */
	m.off = 0;
	json_init(&j, fmem_jrd, &m);
	(void)json_skip(&j);
	(void)json_next(&j);
	/* typed getters straight off the top */
	{
		char	 s[FIELD_MAX];
		int64_t	 v;

		m.off = 0;
		json_init(&j, fmem_jrd, &m);
		(void)json_get_str(&j, s, sizeof(s));
		m.off = 0;
		json_init(&j, fmem_jrd, &m);
		(void)json_get_int(&j, &v);
	}
}

static int
count_item(const struct item *it, void *arg)
{
	long	*n = arg;

	/* what odcp relies on after a successful parse */
	if (strlen(it->name) >= sizeof(it->name) ||
	    strlen(it->id) >= sizeof(it->id) ||
	    strlen(it->modified) >= sizeof(it->modified) ||
	    strlen(it->qxh) >= sizeof(it->qxh))
		abort();
	(*n)++;
	return 0;
}

/* (a) parse_item: one driveItem body as a response. */
static void
t_item(const uint8_t *d, size_t n)
{
	static struct item it;
	static struct http_resp r;
	static char when[FIELD_MAX];
	unsigned char *b = dupbytes(d, n);

	fconn(b, n, 0);
	fresp(&r, n);
	if (parse_item(&fc, &r, &it) == 0) {
		count_item(&it, &(long){ 0 });
		item_time(it.modified, when, sizeof(when));
		item_time(it.created, when, sizeof(when));
	}
	free(b);
}

/* (a) parse_page: a listing page, items streamed to a callback. */
static void
t_page(const uint8_t *d, size_t n)
{
	static struct http_resp r;
	static char next[URL_MAX];
	unsigned char *b = dupbytes(d, n);
	long	 count = 0, pages = 0;
	struct url u;

	fconn(b, n, 0);
	fresp(&r, n);
	if (parse_page(&fc, &r, count_item, &count, next, sizeof(next),
	    &pages, 0) == 0 &&
	    next[0])
		(void)url_parse(next, &u);
	free(b);
}

/* (a) parse_session: an upload session reply. */
static void
t_session(const uint8_t *d, size_t n)
{
	static struct http_resp r;
	static struct upload u;
	unsigned char *b = dupbytes(d, n);
	int64_t	 next, end;

	fconn(b, n, 0);
	fresp(&r, n);
	u.size = 1000000;
	if (parse_session(&fc, &r, &u, 1, &next, &end) == 0 && next != -1 &&
	    (next < 0 || next >= u.size || end >= u.size ||
	    (end >= 0 && end < next)))
		abort();	/* a range outside the file got through */
	free(b);
}

/* (c) proxy URLs and no_proxy lists, from the environment. */
static void
t_proxy(const uint8_t *d, size_t n)
{
	static char buf[8192];
	char	*s = dupstr(d, n);

	if (proxy_set(s, "fuzz") == 0 && proxy.host[0] != '\0') {
		if (strchr(proxy.host, '@') != NULL ||
		    strchr(proxy.host, '/') != NULL ||
		    strspn(proxy.port, "0123456789") != strlen(proxy.port) ||
		    proxy.port[0] == '\0')
			abort();
		/* the CONNECT request must fit and hold one CRLF per line */
		bfmt(buf, sizeof(buf), "Proxy-Authorization: Basic %s\r\n",
		    proxy.auth);
		if (strpbrk(proxy.auth, "\r\n") != NULL)
			abort();
	}
	no_proxy = s;
	(void)proxy_skip("graph.microsoft.com", "443");
	(void)proxy_skip("a", "1");
	no_proxy = NULL;
	free(s);
}

/* (a) parse_drive via the same shape graph_drive reads. */
static void
t_drive(const uint8_t *d, size_t n)
{
	static struct json j;
	static struct drive dr;
	struct fmem m = { d, n, 0, 0 };

	memset(&dr, 0, sizeof(dr));
	json_init(&j, fmem_jrd, &m);
	if (json_next(&j) == JSON_OBJ)
		(void)parse_drive(&j, &dr, 0, "");
}

/* (a) graph_error: a Graph error body. */
static void
t_gerror(const uint8_t *d, size_t n)
{
	static struct http_resp r;
	unsigned char *b = dupbytes(d, n);

	fconn(b, n, 0);
	fresp(&r, n);
	r.status = 400 + (n ? d[0] % 100 : 0);
	(void)graph_error(&fc, &r, "fuzz");
	exit_status = 0;
	free(b);
}

/* (a) auth_parse: a token endpoint reply. */
static void
t_auth(const uint8_t *d, size_t n)
{
	static struct http_resp r;
	unsigned char *b = dupbytes(d, n);

	fconn(b, n, 0);
	fresp(&r, n);
	if (auth_parse(&fc, &r) == 0) {
		if (strlen(oa.access) >= sizeof(oa.access) ||
		    strlen(oa.desc) >= sizeof(oa.desc))
			abort();
	}
	wipe(&oa, sizeof(oa));
	free(b);
}

/*
 * (b) HTTP framing.  Byte 0: transport step (0 = whole), byte 1: read
 * size for http_read, bit 7 of byte 1: HEAD.  Then up to three
 * responses are read from the stream while the connection stays usable.
 */
static void
t_http(const uint8_t *d, size_t n)
{
	static struct http_resp r;
	static unsigned char body[IO_BUF];
	unsigned char *b;
	size_t	 step, rsz;
	int	 head, k;
	long	 got;
	int64_t	 total;

	if (n < 2)
		return;
	step = d[0] % 17;
	rsz = (d[1] & 0x7f) ? (size_t)(d[1] & 0x7f) * 97 : sizeof(body);
	if (rsz > sizeof(body))
		rsz = sizeof(body);
	head = d[1] >> 7;
	b = dupbytes(d + 2, n - 2);
	fconn(b, n - 2, step);
	for (k = 0; k < 3; k++) {
		if (http_recv_head(&fc, &r, head) == -1)
			break;
		if (r.status < 200 || r.status > 999)
			abort();
		total = 0;
		while ((got = http_read(&fc, &r, body, rsz)) > 0) {
			if ((size_t)got > rsz)
				abort();
			total += got;
			if (r.clen >= 0 && !r.chunked && total > r.clen)
				abort();
		}
		if (got < 0 || !r.done || r.close)
			break;
		if (r.clen >= 0 && !r.chunked && total != r.clen && !head &&
		    r.status != 204 && r.status != 304)
			abort();
		/* Retry-After, as graph_request would read it */
		(void)retry_wait(&r, k);
		if (r.location[0]) {
			struct url u;
			char	 shown[256];

			(void)url_parse(r.location, &u);
			log_url(shown, sizeof(shown), r.location, 0);
		}
	}
	/* http_discard of whatever is left, on a fresh copy */
	fconn(b, n - 2, step);
	if (http_recv_head(&fc, &r, head) == 0)
		(void)http_discard(&fc, &r);
	exit_status = 0;
	free(b);
}

/*
 * (a)+(b) together: a raw HTTP response (any framing) whose body is read
 * by the JSON consumers, as graph_list and graph_error do.  Byte 0:
 * transport step; byte 1 bit 0: listing or error body.
 */
static void
t_hpage(const uint8_t *d, size_t n)
{
	static struct http_resp r;
	static char next[URL_MAX];
	unsigned char *b;
	long	 count = 0, pages = 0;

	if (n < 2)
		return;
	b = dupbytes(d + 2, n - 2);
	fconn(b, n - 2, d[0] % 9);
	if (http_recv_head(&fc, &r, 0) == 0) {
		if (d[1] & 1)
			(void)graph_error(&fc, &r, "fuzz");
		else
			(void)parse_page(&fc, &r, count_item, &count, next,
			    sizeof(next), &pages, 0);
	}
	exit_status = 0;
	free(b);
}

/* (c) drive paths: normalise, check, encode, build a Graph URL. */
static void
t_path(const uint8_t *d, size_t n)
{
	static char norm[PATH_MAX_], enc[PATH_MAX_ * 3], url[URL_MAX];
	static char small[16], form[PATH_MAX_ * 3], jesc[PATH_MAX_ * 6];
	static struct graph g;
	static struct profile p;
	char	*s = dupstr(d, n);
	char	*q;
	size_t	 i;

	if (path_norm(norm, sizeof(norm), s) == 0) {
		if (norm[0] != '/' || strlen(norm) >= sizeof(norm))
			abort();
		if (strstr(norm, "//") != NULL)
			abort();
		for (i = 0; norm[i]; i++)
			if (strchr("\"*:<>?\\|", norm[i]) != NULL)
				abort();
		if (strcmp(norm, "/") != 0 && norm[strlen(norm) - 1] == '/')
			abort();
		if (path_encode(enc, sizeof(enc), norm) == -1)
			abort();	/* 3 * PATH_MAX_ must always fit */
		(void)name_check(norm);
		if (g.p == NULL) {
			strcpy(p.graph_url, "https://graph.example/v1.0");
			g.p = &p;
			bfmt(g.base, sizeof(g.base), "%s/me/drive",
			    p.graph_url);
		}
		graph_url(&g, url, sizeof(url), norm, NULL);
		graph_url(&g, url, sizeof(url), norm, "children");
		(void)base_name(norm);
	}
	(void)path_encode(small, sizeof(small), s);
	(void)form_encode(form, sizeof(form), s);
	(void)json_escape(jesc, sizeof(jesc), s);
	/* pasted redirect query parsing, as auth_browser does */
	if (n < URL_MAX) {
		(void)auth_query(s, "code");
		(void)auth_query(s, "state");
	}
	q = dupstr(d, n);
	(void)pct_decode(q, 1);
	free(q);
	exit_status = 0;
	free(s);
}

/* (d) times and numbers. */
static void
t_time(const uint8_t *d, size_t n)
{
	static char out[FIELD_MAX];
	static struct http_resp r;
	char	*s = dupstr(d, n);
	int64_t	 t;

	if (time_parse(s, &t) == 0)
		time_format(out, sizeof(out), t);
	if (http_date(s, &t) == 0)
		time_format(out, sizeof(out), t);
	(void)parse_int(s, INT64_MIN + 1, INT64_MAX, &t);
	item_time(s, out, sizeof(out));
	/* Retry-After with the same text as value and as Date */
	memset(&r, 0, sizeof(r));
	snprintf(r.retry_after, sizeof(r.retry_after), "%s", s);
	snprintf(r.date, sizeof(r.date), "%s", s);
	(void)retry_wait(&r, n % 8);
	free(s);
}

/* The configuration file and token file parsers, through real files. */
static char fdir[64];

static void
put_file_bytes(const char *name, const uint8_t *d, size_t n)
{
	char	 path[128];
	FILE	*f;

	snprintf(path, sizeof(path), "%s/%s", fdir, name);
	if ((f = fopen(path, "w")) == NULL)
		abort();
	fwrite(d, 1, n, f);
	fclose(f);
}

static void
t_conf(const uint8_t *d, size_t n)
{
	static struct profile p;

	memset(&p, 0, sizeof(p));
	strcpy(p.name, n && (d[0] & 1) ? "work" : "default");
	snprintf(p.dir, sizeof(p.dir), "%s", fdir);
	put_file_bytes("config", d, n);
	(void)conf_load(&p);
	exit_status = 0;
}

static void
t_token(const uint8_t *d, size_t n)
{
	static struct profile p;
	static struct token t;

	memset(&p, 0, sizeof(p));
	strcpy(p.name, "default");
	snprintf(p.dir, sizeof(p.dir), "%s", fdir);
	put_file_bytes("default.token", d, n);
	(void)token_load(&p, &t);
	if (strlen(t.access) >= sizeof(t.access) ||
	    strlen(t.refresh) >= sizeof(t.refresh))
		abort();
	exit_status = 0;
}

/* The tree-walk queue: records as get_tree reads them back. */
static void
t_queue(const uint8_t *d, size_t n)
{
	static char rec[PATH_MAX_ + 256];
	FILE	*q = tmpfile();
	long	 pos = 0;
	char	*p, *f;
	int	 i;

	if (q == NULL)
		abort();
	fwrite(d, 1, n, q);
	for (i = 0; i < 10000 && queue_next(q, &pos, rec, sizeof(rec)) == 0;
	    i++) {
		p = rec[0] ? rec + 2 : rec;
		if (p > rec + strlen(rec))
			p = rec + strlen(rec);
		f = queue_field(&p);
		f = queue_field(&p);
		(void)f;
	}
	fclose(q);
}

/* The CA bundle loader (PEM, then X.509 through BearSSL). */
static void
ca_free(void)
{
	size_t	 i;

	for (i = 0; i < nanchors; i++) {
		free(anchors[i].dn.data);
		if (anchors[i].pkey.key_type == BR_KEYTYPE_RSA) {
			free(anchors[i].pkey.key.rsa.n);
			free(anchors[i].pkey.key.rsa.e);
		} else
			free(anchors[i].pkey.key.ec.q);
	}
	free(anchors);
	anchors = NULL;
	nanchors = 0;
}

static void
t_ca(const uint8_t *d, size_t n)
{
	static char path[128];

	put_file_bytes("ca.pem", d, n);
	snprintf(path, sizeof(path), "%s/ca.pem", fdir);
	ca_file = path;
	(void)ca_load();
	ca_free();
	exit_status = 0;
}

static const struct {
	const char *name;
	void	 (*fn)(const uint8_t *, size_t);
} targets[] = {
	{ "json", t_json }, { "item", t_item }, { "page", t_page },
	{ "session", t_session }, { "drive", t_drive },
	{ "gerror", t_gerror }, { "auth", t_auth }, { "http", t_http },
	{ "path", t_path }, { "time", t_time }, { "conf", t_conf },
	{ "token", t_token }, { "queue", t_queue }, { "ca", t_ca },
	{ "hpage", t_hpage }, { "proxy", t_proxy },
};
#define NTARGETS (sizeof(targets) / sizeof(targets[0]))

static int fixed = -1;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *e = getenv("ODCP_FUZZ");
	size_t	 i;
	char	 tmpl[] = "/tmp/odcp-fuzz.XXXXXX";

	(void)argc;
	(void)argv;
	pool_init();
	if (mkdtemp(tmpl) == NULL)
		abort();
	snprintf(fdir, sizeof(fdir), "%s", tmpl);
	if (e != NULL && *e) {
		for (i = 0; i < NTARGETS; i++)
			if (strcmp(e, targets[i].name) == 0)
				fixed = (int)i;
		if (fixed == -1) {
			fprintf(stderr, "ODCP_FUZZ: unknown target %s\n", e);
			exit(2);
		}
	}
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	if (fixed >= 0)
		targets[fixed].fn(d, n);
	else if (n > 0)
		targets[d[0] % NTARGETS].fn(d + 1, n - 1);
	exit_status = 0;
	hush = 0;
	return 0;
}
