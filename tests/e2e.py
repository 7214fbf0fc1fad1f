#!/usr/bin/env python3
"""End-to-end tests of odcp: the real ./odcp binary against the emulator
tests/fakegraph.py.  Python 3 standard library only.

    python3 tests/e2e.py [-k SUBSTRING] [-v]
    E2E_VIA_PROXY=1 python3 tests/e2e.py        (odcp through the emulator's proxy)

One emulator runs for the whole run (killed at exit, also on failure); every
test starts from an emptied emulator (POST /reset and the run's base config)
and its own temporary config directory.  Each test prints "ok NAME" or
"FAIL NAME: reason"; the last line is "e2e: N passed, M failed" (exit 1 if
M > 0).

E2E_VIA_PROXY=1 starts the emulator with --public-hosts: odcp runs with
https_proxy=<the emulator's CONNECT proxy> and profiles without login_url
and graph_url (its defaults, the real host names), only cacert; the
proxy's own CONNECT records are left out of EMU.log().  E2E_VIA_PROXY=direct
keeps the localhost URLs but still sends odcp through the proxy.
"""

import base64, datetime, filecmp, http.client, json, os, queue, re, shutil
import signal, ssl, stat, subprocess, sys, tempfile, threading, time
import traceback, urllib.parse, urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ODCP = os.environ.get("E2E_ODCP") or os.path.join(ROOT, "odcp")   # E2E_ODCP: another build
FAKEGRAPH = os.path.join(HERE, "fakegraph.py")
VIA_PROXY = os.environ.get("E2E_VIA_PROXY", "0") != "0"          # "1": real names; "direct": localhost
PUBLIC = VIA_PROXY and os.environ["E2E_VIA_PROXY"] != "direct"
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")

MiB = 1024 * 1024
UNIT = 327680                  # upload fragment unit (graph-api.md 7.2)
FRAG_LIMIT = 60 * MiB          # a fragment must be smaller than this
SIMPLE_MAX = 4 * MiB           # odcp: simple PUT up to and including this
DRIVE_ID = "b!emu-drive-0001"
UPN = "adele@contoso.example"
QUOTA_TOTAL = 5497558138880
CLIENT_ID = "e2e-test-client"
SECRET = "emulator-secret"     # fakegraph DEFAULT_CONFIG["client_secret"]
TOKEN_URL_RE = re.compile(r"/oauth2/v2\.0/token$")
SIGNIN_RE = re.compile(r"^To sign in, open (\S+) and enter the code (\S+)$")

VERBOSE = False


# ------------------------------------------------------------ quickXorHash
def qxh(data):
    """quickXorHash per graph-api.md 10.1 (base64).  Bytes at the same
    position mod 160 land at the same bit offset, so the input is folded
    into one 160-byte row first (XOR of halves), then each of the 160
    column bytes is rotated into the 160-bit accumulator once."""
    n = len(data)
    buf = bytes(data) + b"\0" * ((-n) % 160)
    while len(buf) > 160:
        rows = len(buf) // 160
        half = rows // 2
        cut = half * 160
        x = int.from_bytes(buf[:cut], "little") ^ int.from_bytes(buf[cut:2 * cut], "little")
        buf = x.to_bytes(cut, "little") + buf[2 * cut:]
    mask = (1 << 160) - 1
    acc = 0
    for i, b in enumerate(buf):
        if b:
            off = (i * 11) % 160
            v = b << off
            acc ^= (v | (v >> 160)) & mask
    acc ^= (n & 0xFFFFFFFFFFFFFFFF) << 96
    return base64.b64encode(acc.to_bytes(20, "little")).decode()


def _check_qxh():
    vectors = [(b"", "AAAAAAAAAAAAAAAAAAAAAAAAAAA="), (b"a", "YQAAAAAAAAAAAAAAAQAAAAAAAAA="),
               (b"abc", "YRDDGAAAAAAAAAAAAwAAAAAAAAA="), (b"Hello world", "SCgDG9jwBhDc4Q1yawMZAAAAAAA="),
               (b"The quick brown fox jumps over the lazy dog", "bMSlbysmxJL6S75XwfMcQZOpcr4="),
               (bytes(64), "AAAAAAAAAAAAAAAAQAAAAAAAAAA="), (bytes(range(256)), "QkGEfSisZcA7k+FCh71r2dbCayY="),
               (bytes(i % 256 for i in range(MiB)), "QkGEfSisZcA7k+FCh7x72dbCayY="),
               (bytes(20000000), "AAAAAAAAAAAAAAAAAC0xAQAAAAA="), (b"\x4a", "SgAAAAAAAAAAAAAAAQAAAAAAAAA="),
               (b"\xb5\xb4", "taAFAAAAAAAAAAAAAgAAAAAAAAA="),
               (base64.b64decode("2fuxhBJXtpWFe8dOfdGeHw=="), "O9tHLAghgSvYohKFyMMxnNCHaHg=")]
    for data, want in vectors:
        got = qxh(data)
        if got != want:
            sys.exit("e2e: the test's own quickXorHash is wrong for %d bytes: %s != %s" % (len(data), got, want))


def iso(t):
    return datetime.datetime.fromtimestamp(int(t), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------ emulator
def _die_with_parent():
    """In the emulator's child process: get SIGTERM when this script dies,
    even by SIGKILL (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
    except Exception:
        pass


class Emulator:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="odcp-e2e-emu-")
        self.proc = None
        self.base_config = None

    def start(self):
        self.errf = open(os.path.join(self.dir, "emulator.log"), "w")
        self.proc = subprocess.Popen([sys.executable, FAKEGRAPH, "--dir", os.path.join(self.dir, "state"),
                                      "--interval", "1"] + (["--public-hosts"] if PUBLIC else []),
                                     stdout=self.errf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        ep = os.path.join(self.dir, "state", "endpoints.json")
        deadline = time.time() + 60
        while not os.path.exists(ep):
            if self.proc.poll() is not None:
                raise RuntimeError("emulator exited with %s; see %s" % (self.proc.returncode, self.errf.name))
            if time.time() > deadline:
                raise RuntimeError("emulator did not write endpoints.json within 60 s")
            time.sleep(0.05)
        with open(ep) as f:
            self.urls = json.load(f)
        self.control = self.urls["control"]
        self.ca = self.urls["ca"]
        if PUBLIC:
            _tunnel_https(self.urls["proxy"])
        self.base_config = self.ctl("POST", "/config", {"interval": 1, "auto_approve": 0})

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def ctl(self, method, path, body=None, raw=False):
        data = json.dumps(body).encode() if body is not None else (b"{}" if method == "POST" else None)
        req = urllib.request.Request(self.control + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                out = r.read()
        except urllib.error.HTTPError as e:
            raise AssertionError("control %s %s -> %d %s" % (method, path, e.code, e.read()[:200]))
        return out if raw else json.loads(out)

    def reset(self):
        self.ctl("POST", "/reset")
        self.ctl("POST", "/config", self.base_config)

    def config(self, **kw):
        return self.ctl("POST", "/config", kw)

    def log(self):
        """The request log, once it has stopped growing (the emulator records
        a request after answering it, so the last record can trail odcp's exit)."""
        prev = self.ctl("GET", "/log")
        for _ in range(40):
            time.sleep(0.05)
            cur = self.ctl("GET", "/log")
            if len(cur) == len(prev):
                break
            prev = cur
        return [x for x in cur if x["listener"] != "proxy"]

    def clear_log(self):
        ALL_LOG.extend(self.log())          # keep every record for the run-wide checks
        self.ctl("POST", "/log/clear")

    def tree(self):
        return {e["path"]: e for e in self.ctl("GET", "/tree")}

    def file(self, path):
        return self.ctl("GET", "/file?path=" + urllib.parse.quote(path), raw=True)

    def seed(self, path, data=b"", mtime=None):
        body = {"path": path, "content_b64": base64.b64encode(data).decode()}
        if mtime is not None:
            body["mtime"] = mtime
        return self.ctl("POST", "/seed", body)

    def seed_folder(self, path):
        return self.ctl("POST", "/seed", {"path": path, "folder": True})

    def tokens(self):
        return self.ctl("GET", "/tokens")

    def devicecodes(self):
        return self.ctl("GET", "/devicecodes")


def _tunnel_https(proxy):
    """With the real host names, the test's own HTTPS requests (the browser
    step of login --browser) go through the emulator's proxy too."""
    p = urllib.parse.urlsplit(proxy)
    init = http.client.HTTPSConnection.__init__

    def tunnelled(self, host, port=None, **kw):
        init(self, p.hostname, p.port, **kw)
        self.set_tunnel(host, port or 443)

    http.client.HTTPSConnection.__init__ = tunnelled


EMU = Emulator()
ALL_LOG = []          # every request record of the run, gathered after each test


# ------------------------------------------------------------ odcp runs
class Result:
    def __init__(self, args, rc, out, err):
        self.args, self.rc, self.out, self.err = args, rc, out, err

    @property
    def text(self):
        return self.out.decode("utf-8", "replace")

    def lines(self):
        return self.text.splitlines()

    def __repr__(self):
        return "odcp %s -> %s; stdout %r; stderr %r" % (" ".join(self.args), self.rc, self.out[:300], self.err[-600:])


class Bg:
    """odcp running in the background, stderr read line by line."""
    def __init__(self, argv, env, stdin):
        self.argv = argv
        self.p = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.q = queue.Queue()
        self.err_lines = []
        self.out = b""
        threading.Thread(target=self._read_err, daemon=True).start()
        self._out_t = threading.Thread(target=self._read_out, daemon=True)
        self._out_t.start()

    def _read_err(self):
        for raw in iter(self.p.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.err_lines.append(line)
            self.q.put(line)
        self.q.put(None)

    def _read_out(self):
        self.out = self.p.stdout.read()

    def wait_line(self, regex, timeout=20):
        rx = re.compile(regex)
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                raise AssertionError("odcp printed no line matching %r within %ds; stderr so far: %r"
                                     % (regex, timeout, self.err_lines))
            try:
                line = self.q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError("odcp ended (rc %s) without a line matching %r; stderr: %r"
                                     % (self.p.wait(), regex, self.err_lines))
            m = rx.search(line)
            if m:
                return m

    def finish(self, timeout=30):
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("odcp %s did not end within %ds; stderr: %r" % (self.argv[1:], timeout, self.err_lines))
        self._out_t.join(5)
        time.sleep(0.05)
        return rc

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(5)


class Ctx:
    """Per-test state: a temp dir, a config dir, soft checks."""
    def __init__(self, name):
        self.name = name
        self.tmp = tempfile.mkdtemp(prefix="odcp-e2e-%s-" % name)
        self.home = os.path.join(self.tmp, "home")
        self.cfg = os.path.join(self.tmp, "cfg")
        self.work = os.path.join(self.tmp, "work")
        for d in (self.home, self.work):
            os.makedirs(d)
        os.makedirs(self.cfg, mode=0o700)
        self.problems = []
        self.bgs = []
        self.outputs = []          # (stdout, stderr) of every run, for the secrets check
        self.notes = []            # measured figures, printed as "# ..." under the result
        self.write_config()

    def cleanup(self):
        for b in self.bgs:
            b.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- config
    def profile(self, **kw):
        d = {"client_id": CLIENT_ID, "login_url": EMU.urls["login_url"], "graph_url": EMU.urls["graph_url"],
             "cacert": EMU.ca}
        if PUBLIC:          # odcp's default endpoints are the real names
            d["login_url"] = d["graph_url"] = None
        d.update(kw)
        return {k: v for k, v in d.items() if v is not None}

    def write_config(self, profiles=None, extra=""):
        profiles = profiles if profiles is not None else {"default": self.profile()}
        text = ""
        for name, keys in profiles.items():
            text += "[%s]\n" % name + "".join("%s = %s\n" % kv for kv in keys.items()) + "\n"
        with open(os.path.join(self.cfg, "config"), "w") as f:
            f.write(text + extra)

    def token_path(self, profile="default"):
        return os.path.join(self.cfg, profile + ".token")

    def token(self, profile="default"):
        out = {}
        with open(self.token_path(profile)) as f:
            for line in f:
                line = line.rstrip("\n")
                if line and not line.startswith("#") and "=" in line:
                    k, v = line.split("=", 1)
                    out[k] = v
        return out

    # ---- running odcp
    def env(self, extra=None):
        e = {k: v for k, v in os.environ.items()
             if not k.startswith("ODCP_") and k not in ("SSL_CERT_FILE", "SSL_CERT_DIR", "XDG_CONFIG_HOME")
             and k.lower() not in PROXY_VARS}
        if VIA_PROXY:
            e["https_proxy"] = EMU.urls["proxy"]
        e["HOME"] = self.home
        e["LC_ALL"] = "C.UTF-8"
        e["ODCP_RETRY_SCALE"] = "0.01"     # waits of seconds become tens of ms
        e.update(extra or {})
        return {k: v for k, v in e.items() if v is not None}     # None: unset

    def argv(self, args, profile=None, cfg=True):
        a = [ODCP]
        if cfg:
            a += ["-c", self.cfg]
        if profile:
            a += ["-p", profile]
        return a + list(args)

    def run(self, *args, profile=None, stdin=None, input=None, timeout=60, cwd=None, env=None, cfg=True):
        argv = self.argv(args, profile, cfg)
        try:
            p = subprocess.run(argv, input=input, stdin=None if input is not None else (stdin or subprocess.DEVNULL),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                               cwd=cwd or self.work, env=self.env(env))
        except subprocess.TimeoutExpired:
            raise AssertionError("odcp %s did not end within %ds" % (" ".join(args), timeout))
        r = Result([str(a) for a in args], p.returncode, p.stdout, p.stderr.decode("utf-8", "replace"))
        self.outputs.append((r.out, r.err))
        if VERBOSE:
            print("   $ odcp %s -> %d\n     %r\n     %r" % (" ".join(r.args), r.rc, r.out[:200], r.err[-300:]))
        return r

    def bg(self, *args, profile=None, stdin=subprocess.DEVNULL, env=None):
        b = Bg(self.argv(args, profile), self.env(env), stdin)
        self.bgs.append(b)
        return b

    def ok(self, *args, **kw):
        r = self.run(*args, **kw)
        if r.rc != 0:
            raise AssertionError("expected exit 0: %r" % r)
        return r

    def status(self, want, *args, **kw):
        """Run and require exit status `want` and, for failures, a one-line
        error on stderr that starts with "odcp: "."""
        r = self.run(*args, **kw)
        if r.rc != want:
            raise AssertionError("expected exit %d: %r" % (want, r))
        if want != 0:
            lines = [l for l in r.err.splitlines() if l.strip()]
            self.check(len(lines) == 1 and lines[0].startswith("odcp: "),
                       "odcp %s: stderr should be one line starting 'odcp: ', got %r" % (" ".join(r.args), r.err))
        return r

    def login(self, profile=None):
        """Device-code sign-in, approved by the emulator on the first poll."""
        EMU.config(auto_approve=1)
        try:
            return self.ok("login", profile=profile, timeout=30)
        finally:
            EMU.config(auto_approve=0)

    # ---- checks
    def note(self, msg):
        self.notes.append(msg)

    def check(self, cond, msg):
        if not cond:
            self.problems.append(msg)
        return cond

    def eq(self, got, want, what):
        return self.check(got == want, "%s: got %r, want %r" % (what, got, want))

    def local(self, rel, data=None, mtime=None):
        p = os.path.join(self.work, rel)
        if data is not None:
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(data)
            if mtime is not None:
                os.utime(p, (mtime, mtime))
        return p


def read(path):
    with open(path, "rb") as f:
        return f.read()


def kv_lines(text):
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition(": ")
        if sep:
            out[k] = v
    return out


def graph_recs(log):
    return [r for r in log if r["listener"] == "graph"]


def token_posts(log):
    return [r for r in log if r["listener"] == "login" and r["method"] == "POST" and TOKEN_URL_RE.search(r["path"])]


def content_range(rec):
    m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", rec["headers"].get("content-range", ""))
    return tuple(int(x) for x in m.groups()) if m else None


# ------------------------------------------------------------ harness
TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


def run_tests(selected):
    passed = failed = 0
    for fn in selected:
        name = fn.__name__[len("test_"):]
        ctx = Ctx(name)
        t0 = time.time()
        try:
            EMU.reset()
            fn(ctx)
            if ctx.problems:
                raise AssertionError("; ".join(ctx.problems))
            passed += 1
            print("ok %s" % name, flush=True)
        except Exception as e:
            failed += 1
            msg = str(e) if isinstance(e, AssertionError) else "%s: %s" % (type(e).__name__, e)
            reasons = list(ctx.problems)
            if msg != "; ".join(ctx.problems):
                reasons.append(msg)
            print("FAIL %s: %s" % (name, "; ".join(reasons).replace("\n", " | ")), flush=True)
            if VERBOSE and not isinstance(e, AssertionError):
                traceback.print_exc()
        finally:
            for n in ctx.notes:
                print("#   %s" % n, flush=True)
            if VERBOSE:
                print("   (%s: %.1fs)" % (name, time.time() - t0), flush=True)
            ctx.cleanup()
            try:
                ALL_LOG.extend(EMU.log())
            except Exception:
                pass
    return passed, failed


# ============================================================ tests
# ---- 1. device-code sign-in
@test
def test_login_device_code(t):
    b = t.bg("login")
    m = b.wait_line(SIGNIN_RE.pattern)
    url, code = m.group(1), m.group(2)
    t.eq(url, EMU.urls["login_url"] + "/devicelogin", "verification URL")
    codes = EMU.devicecodes()
    t.eq([c["user_code"] for c in codes], [code], "user codes known to the emulator")
    t0 = time.time()
    while EMU.devicecodes()[0]["polls"] < 2:
        if time.time() - t0 > 10:
            raise AssertionError("odcp did not poll twice within 10 s (interval 1 s)")
        time.sleep(0.1)
    elapsed = time.time() - t0
    polls = EMU.devicecodes()[0]["polls"]
    log = EMU.log()
    pend = token_posts(log)
    t.check(len(pend) >= 2, "want >= 2 token POSTs before approval, got %d" % len(pend))
    t.check(all(r["status"] == 400 for r in pend), "token POSTs before approval must be answered 400 (authorization_pending): %r"
            % [r["status"] for r in pend])
    t.eq(EMU.devicecodes()[0]["state"], "pending", "device code state before approval")
    t.check(polls <= elapsed / 0.5 + 3, "odcp polls faster than the 1 s interval: %d polls in %.1fs" % (polls, elapsed))
    t.check(not os.path.exists(t.token_path()), "token file written before approval")
    EMU.ctl("POST", "/approve", {"user_code": code})
    rc = b.finish(30)
    if rc != 0:
        raise AssertionError("login after approve: exit %d, stderr %r" % (rc, b.err_lines))
    log = EMU.log()
    tp = token_posts(log)
    t.eq(tp[-1]["status"], 200, "last token POST status")
    t.check(not any(r["auth"] for r in log if r["listener"] == "login"), "login requests carried Authorization")
    st = os.stat(t.token_path())
    t.eq(stat.S_IMODE(st.st_mode), 0o600, "token file mode")
    tok = t.token()
    issued = EMU.tokens()["refresh_issued"]
    t.check(len(issued) >= 1 and tok.get("refresh_token") == issued[-1],
            "token file refresh_token is not the emulator's latest issued one")
    t.check(tok.get("access_token", "").startswith("EwB"), "token file has no access_token")
    exp = int(tok.get("expires", "0"))
    t.check(abs(exp - (time.time() + 3599)) < 60, "expires=%d is not about now+3599" % exp)
    # the token works
    EMU.seed("/hello.txt", b"hi")
    r = t.ok("ls", "/")
    t.eq(r.lines(), ["hello.txt"], "ls / after login")


@test
def test_login_declined(t):
    b = t.bg("login")
    code = b.wait_line(SIGNIN_RE.pattern).group(2)
    t0 = time.time()
    while EMU.devicecodes()[0]["polls"] < 1 and time.time() - t0 < 10:
        time.sleep(0.1)
    EMU.ctl("POST", "/deny", {"user_code": code})
    rc = b.finish(30)
    t.eq(rc, 3, "exit status of a declined sign-in")
    lines = [l for l in b.err_lines if l.startswith("odcp: ")]
    t.check(len(lines) == 1, "want one 'odcp: ' error line, got %r" % b.err_lines)
    t.check(not os.path.exists(t.token_path()), "a token file was written after a declined sign-in")


@test
def test_login_expired(t):
    EMU.config(device_expires_in=2)
    t0 = time.time()
    r = t.run("login", timeout=30)
    t.eq(r.rc, 3, "exit status of an expired device code (%r)" % r)
    t.check(time.time() - t0 < 15, "odcp kept polling long after the code expired (%.1fs)" % (time.time() - t0))
    t.check(SIGNIN_RE.search(r.err.splitlines()[0] if r.err else "") is not None, "no sign-in line: %r" % r.err)
    t.check(r.err.splitlines()[-1].startswith("odcp: "), "no 'odcp: ' error line: %r" % r.err)
    t.check(not os.path.exists(t.token_path()), "a token file was written after an expired code")


@test
def test_login_no_client_id(t):
    t.write_config({"default": t.profile(client_id=None)})
    r = t.status(2, "login", timeout=20)
    t.check("client" in r.err.lower(), "error should name the client id: %r" % r.err)
    t.eq([x for x in EMU.log() if x["listener"] == "login"], [], "requests to the login listener without a client id")


# ---- 2. refresh with rotation
def _refresh_round(t, what):
    before = EMU.tokens()
    old_file = t.token()
    EMU.ctl("POST", "/expire_tokens")
    EMU.clear_log()
    r = t.ok("ls", "/")
    t.eq(r.lines(), ["f.txt"], "%s: ls / output" % what)
    log = EMU.log()
    i = next((n for n, x in enumerate(log) if x["listener"] == "graph" and x["status"] == 401), None)
    if i is None:
        raise AssertionError("%s: no 401 from graph in the log: %r" % (what, [(x["listener"], x["status"]) for x in log]))
    j = next((n for n in range(i + 1, len(log)) if log[n]["listener"] == "login"), None)
    t.check(j is not None and log[j]["method"] == "POST" and TOKEN_URL_RE.search(log[j]["path"])
            and log[j]["status"] == 200, "%s: no successful token POST after the 401" % what)
    if j is not None:
        k = next((n for n in range(j + 1, len(log)) if log[n]["listener"] == "graph"), None)
        t.check(k is not None and log[k]["method"] == log[i]["method"] and log[k]["target"] == log[i]["target"]
                and log[k]["status"] == 200 and log[k]["auth"],
                "%s: the request that got 401 was not replayed with 200" % what)
    t.eq(sum(1 for x in log if x["status"] == 401), 1, "%s: number of 401s" % what)
    after = EMU.tokens()
    t.eq(len(after["refresh_issued"]), len(before["refresh_issued"]) + 1, "%s: refresh tokens issued" % what)
    t.eq(EMU.devicecodes().__len__(), 1, "%s: device codes (a refresh, not a new sign-in)" % what)
    new_file = t.token()
    t.check(new_file["refresh_token"] == after["refresh_issued"][-1],
            "%s: token file does not hold the newest refresh token" % what)
    t.check(new_file["access_token"] != old_file["access_token"], "%s: access token not replaced in the file" % what)
    t.eq(stat.S_IMODE(os.stat(t.token_path()).st_mode), 0o600, "%s: token file mode" % what)


@test
def test_refresh_rotation(t):
    EMU.seed("/f.txt", b"x")
    t.login()
    _refresh_round(t, "refresh")
    EMU.config(strict_rotation=True)
    _refresh_round(t, "strict rotation 1")
    _refresh_round(t, "strict rotation 2")
    t.eq(sorted(f for f in os.listdir(t.cfg) if f != "state"), [".default.lock", "config", "default.token"],
         "files in the config dir (temp files left?)")


@test
def test_refresh_before_expiry(t):
    # odcp renews an access token 300 s before it expires, or at half its
    # life when that is shorter: a 4 s token is renewed after 2 s, before
    # the request that would otherwise meet a 401.
    EMU.seed("/f.txt", b"x")
    EMU.config(token_lifetime=4)
    t.login()
    tok = t.token()
    t.eq(int(tok["expires"]) - int(tok["obtained"]), 4, "stored lifetime")
    time.sleep(2.5)
    n = len(EMU.tokens()["refresh_issued"])
    EMU.clear_log()
    r = t.ok("ls", "/")
    t.eq(r.lines(), ["f.txt"], "ls /")
    log = EMU.log()
    t.check(log and log[0]["listener"] == "login" and TOKEN_URL_RE.search(log[0]["path"]) and log[0]["status"] == 200,
            "the first request should be a token refresh: %r" % [(x["listener"], x["method"], x["path"]) for x in log[:3]])
    t.eq([x["status"] for x in log if x["status"] == 401], [], "401s")
    t.check(len(EMU.tokens()["refresh_issued"]) > n, "no refresh token issued")
    t.eq(t.token()["refresh_token"], EMU.tokens()["refresh_issued"][-1], "stored refresh token")


@test
def test_fresh_token_not_refreshed_again(t):
    # A 60 s token is renewed at half its life, not before every request
    # (the 300 s slack alone would make it look stale at once).
    EMU.seed("/f.txt", b"x")
    EMU.config(token_lifetime=60)
    t.login()
    log = EMU.log()
    t.eq(len(token_posts(log)), 1, "token POSTs during login (device code redeemed, then refreshed again?): %r"
         % [(x["method"], x["path"]) for x in log])
    EMU.clear_log()
    t.eq(t.ok("ls", "-R", "/").lines(), ["f.txt"], "ls -R /")
    log = EMU.log()
    t.eq(len(token_posts(log)), 0, "token refreshes during one 'ls -R /' (%d graph requests): %r"
         % (len(graph_recs(log)), [(x["listener"], x["method"], x["path"]) for x in log]))


# ---- 3. not signed in
@test
def test_not_signed_in(t):
    EMU.seed("/f.txt", b"x")
    for args in (["ls", "/"], ["get", "/f.txt", "-"], ["whoami"]):
        r = t.status(3, *args)
        t.check("odcp login" in r.err, "%s: message should name 'odcp login': %r" % (args[0], r.err))
        t.eq(r.out, b"", "%s: stdout" % args[0])
    t.eq([(x["listener"], x["path"]) for x in EMU.log()], [], "requests made without a token")


# ---- 4. ls
@test
def test_ls_paging_and_formats(t):
    EMU.config(page_size=3)
    names = ["file-%02d.txt" % i for i in range(10)]
    for i, n in enumerate(names):
        EMU.seed("/many/" + n, b"x" * (i * 100), mtime=1600000000 + i * 86400)
    t.login()
    EMU.clear_log()
    r = t.ok("ls", "/many")
    t.eq(r.lines(), names, "ls /many")
    kids = [x for x in EMU.log() if x["listener"] == "graph" and x["method"] == "GET" and x["path"].endswith("/children")]
    t.eq(len(kids), 4, "GET children pages")
    t.eq([x["status"] for x in kids], [200] * len(kids), "children page statuses")
    if kids:
        t.check("skiptoken" not in kids[0]["target"], "first page has a skiptoken")
        t.check(all("skiptoken" in k["target"] for k in kids[1:]), "later pages lack $skiptoken: %r" % [k["target"] for k in kids])
    tree = EMU.tree()
    r = t.ok("ls", "-l", "/many")
    want = ["- %12d %s %s" % (tree["/many/" + n]["size"], tree["/many/" + n]["modified"], n) for n in names]
    t.eq(r.lines(), want, "ls -l /many")

    EMU.seed("/r/a.txt", b"aaaa", mtime="2021-03-04T05:06:07Z")
    EMU.seed("/r/sub/b.txt", b"b" * 1234567)
    EMU.seed("/r/sub/deeper/c.txt", b"")
    for n in ("b2.txt", "b3.txt", "b4.txt"):        # more than one page (3) in sub/
        EMU.seed("/r/sub/" + n, b"bb")
    EMU.seed_folder("/r/zz empty")
    EMU.seed("/r/zzz.txt", b"z")
    tree = EMU.tree()
    r = t.ok("ls", "-l", "/r")
    want = ["- %12d %s a.txt" % (4, "2021-03-04T05:06:07Z"),
            "d %12d %s sub/" % (1234567 + 6, tree["/r/sub"]["modified"]),
            "d %12d %s zz empty/" % (0, tree["/r/zz empty"]["modified"]),
            "- %12d %s zzz.txt" % (1, tree["/r/zzz.txt"]["modified"])]
    t.eq(r.lines(), want, "ls -l /r")
    r = t.ok("ls", "-R", "/r")
    lines = r.lines()
    want = {"a.txt", "sub/", "sub/b.txt", "sub/b2.txt", "sub/b3.txt", "sub/b4.txt", "sub/deeper/",
            "sub/deeper/c.txt", "zz empty/", "zzz.txt"}
    t.eq(sorted(lines), sorted(want), "ls -R /r")
    for l in lines:
        parent = l.rstrip("/").rpartition("/")[0]
        if parent:
            t.check(parent + "/" in lines and lines.index(parent + "/") < lines.index(l),
                    "ls -R: %r printed before its parent" % l)
    r = t.ok("ls", "/r/sub/b.txt")
    t.eq(r.lines(), ["b.txt"], "ls of a file")
    r = t.ok("ls", "-l", "/r/a.txt")
    t.eq(r.lines(), ["- %12d %s a.txt" % (4, "2021-03-04T05:06:07Z")], "ls -l of a file")
    r = t.status(4, "ls", "/r/missing")
    t.eq(r.out, b"", "stdout of ls of a missing path")
    t.status(4, "ls", "/nowhere/at/all")


# ---- 5. put/get sizes, upload sessions, downloads
def _check_upload_log(t, log, name, size, frag=None):
    g = graph_recs(log)
    up = [x for x in log if x["listener"] == "upload"]
    puts_content = [x for x in g if x["method"] == "PUT" and x["path"].endswith("/content")]
    sessions = [x for x in g if x["method"] == "POST" and x["path"].endswith("/createUploadSession")]
    t.check(not any(x["auth"] for x in up), "%s: Authorization sent to the upload listener" % name)
    t.check(not any(x["auth"] for x in log if x["listener"] == "download"), "%s: Authorization sent to the download listener" % name)
    if size <= SIMPLE_MAX:
        t.eq(len(puts_content), 1, "%s (%d bytes): simple PUT .../content on graph" % (name, size))
        t.eq(sessions, [], "%s (%d bytes): upload sessions" % (name, size))
        t.eq(up, [], "%s (%d bytes): upload listener requests" % (name, size))
        if puts_content:
            t.check(name in puts_content[0]["path"], "%s: PUT path %r lacks the name" % (name, puts_content[0]["path"]))
            t.eq(puts_content[0]["body_len"], size, "%s: PUT body length" % name)
            t.check(puts_content[0]["status"] in (200, 201), "%s: PUT status %d" % (name, puts_content[0]["status"]))
        return
    t.eq(puts_content, [], "%s (%d bytes): simple PUTs" % (name, size))
    t.eq(len(sessions), 1, "%s (%d bytes): createUploadSession on graph" % (name, size))
    if sessions:
        t.eq(sessions[0]["status"], 200, "%s: createUploadSession status" % name)
        t.check(sessions[0]["auth"], "%s: createUploadSession without Authorization" % name)
    frags = [x for x in up if x["method"] == "PUT"]
    t.eq([x for x in up if x["method"] != "PUT"], [], "%s: non-PUT upload requests" % name)
    pos = 0
    for n, x in enumerate(frags):
        cr = content_range(x)
        if not t.check(cr is not None, "%s: fragment %d has no valid Content-Range: %r" % (name, n, x["headers"].get("content-range"))):
            return
        a, b, total = cr
        ln = b - a + 1
        t.eq(total, size, "%s: fragment %d total" % (name, n))
        t.eq(a, pos, "%s: fragment %d start (contiguous)" % (name, n))
        t.eq(x["body_len"], ln, "%s: fragment %d body length" % (name, n))
        t.check(ln < FRAG_LIMIT, "%s: fragment %d is %d bytes (>= 60 MiB)" % (name, n, ln))
        last = n == len(frags) - 1
        if not last:
            t.check(ln % UNIT == 0, "%s: fragment %d length %d not a multiple of 327680" % (name, n, ln))
            t.eq(x["status"], 202, "%s: fragment %d status" % (name, n))
        else:
            t.check(x["status"] in (200, 201), "%s: last fragment status %d" % (name, x["status"]))
        if frag is not None and not last:
            t.eq(ln, frag, "%s: fragment %d length with --fragment-size" % (name, n))
        pos = b + 1
    t.eq(pos, size, "%s: bytes covered by fragments" % name)
    return frags


@test
def test_put_get_sizes(t):
    sizes = [("zero.bin", 0), ("one.bin", 1), ("four-mib.bin", 4 * MiB), ("four-mib-plus.bin", 4 * MiB + 1),
             ("big25.bin", 25 * MiB)]
    EMU.seed_folder("/sizes")
    t.login()
    data = {}
    base = 1577934245          # 2020-01-02T03:04:05Z
    for i, (name, size) in enumerate(sizes):
        data[name] = os.urandom(size)
        t.local("src/" + name, data[name], mtime=base + i * 3671)
    os.makedirs(t.local("out"))
    for i, (name, size) in enumerate(sizes):
        mt = base + i * 3671
        EMU.clear_log()
        t.ok("put", t.local("src/" + name), "/sizes/" + name, timeout=120)
        _check_upload_log(t, EMU.log(), name, size)
        e = EMU.tree().get("/sizes/" + name)
        if not t.check(e is not None, "%s: not in /tree after put" % name):
            continue
        t.eq(e["size"], size, "%s: size in /tree" % name)
        t.eq(e["quickXorHash"], qxh(data[name]), "%s: quickXorHash in /tree" % name)
        t.check(EMU.file("/sizes/" + name) == data[name], "%s: emulator bytes differ from the local file" % name)
        t.eq(e["mtime"], mt, "%s: remote mtime (fileSystemInfo)" % name)
        st = kv_lines(t.ok("stat", "/sizes/" + name).text)
        t.eq(st.get("modified"), iso(mt), "%s: stat modified" % name)
        # download
        EMU.clear_log()
        t.ok("get", "/sizes/" + name, t.local("out/" + name), timeout=120)
        t.check(read(t.local("out/" + name)) == data[name], "%s: downloaded bytes differ" % name)
        t.eq(int(os.stat(t.local("out/" + name)).st_mtime), mt, "%s: local mtime after get" % name)
        log = EMU.log()
        c = [n for n, x in enumerate(log) if x["listener"] == "graph" and x["method"] == "GET" and x["path"].endswith("/content")]
        if t.check(len(c) == 1, "%s: want one GET .../content on graph, got %d" % (name, len(c))):
            t.eq(log[c[0]]["status"], 302, "%s: GET .../content status" % name)
            t.check(log[c[0]]["auth"], "%s: GET .../content without Authorization" % name)
            d = [x for x in log[c[0] + 1:] if x["listener"] == "download"]
            t.check(len(d) >= 1 and d[0]["method"] == "GET" and d[0]["status"] in (200, 206) and not d[0]["auth"],
                    "%s: no Authorization-free GET on the download listener after the 302: %r" %
                    (name, [(x["method"], x["status"], x["auth"]) for x in d]))
        t.check(not any(x["auth"] for x in log if x["listener"] in ("download", "upload")),
                "%s: Authorization on a pre-authenticated host" % name)
    # explicit fragment size: 25 MiB / 655360 = 40 fragments
    EMU.clear_log()
    t.ok("put", "--fragment-size", "655360", t.local("src/big25.bin"), "/sizes/big25.bin", timeout=120)
    frags = _check_upload_log(t, EMU.log(), "big25.bin --fragment-size 655360", 25 * MiB, frag=655360)
    t.eq(len(frags or []), 40, "fragments with --fragment-size 655360")
    t.check(EMU.file("/sizes/big25.bin") == data["big25.bin"], "big25.bin re-upload: bytes differ")
    # invalid fragment sizes
    EMU.clear_log()
    for bad in ("1000", "62914560", "0", "-327680", "abc"):
        t.status(2, "put", "--fragment-size", bad, t.local("src/four-mib-plus.bin"), "/sizes/bad.bin")
    t.eq([(x["method"], x["path"]) for x in EMU.log() if x["method"] != "GET"], [], "writes made with an invalid --fragment-size")
    t.check("/sizes/bad.bin" not in EMU.tree(), "file created despite an invalid --fragment-size")


# ---- 6. secrets and hosts
@test
def test_verbose_never_shows_secrets(t):
    EMU.seed("/v/a.txt", b"abc")
    src = t.local("big.bin", os.urandom(5 * MiB))
    outs = []
    EMU.config(auto_approve=1)
    r = t.ok("-vv", "login", timeout=30)
    EMU.config(auto_approve=0)
    outs.append(r)
    outs.append(t.ok("-vv", "ls", "/v"))
    outs.append(t.ok("-vv", "put", src, "/v/big.bin", timeout=60))
    outs.append(t.ok("-vv", "get", "/v/big.bin", t.local("back.bin"), timeout=60))
    outs.append(t.ok("-vv", "get", "/v/a.txt", "-"))
    EMU.ctl("POST", "/expire_tokens")
    outs.append(t.ok("-vv", "stat", "/v/a.txt"))
    outs.append(t.ok("-vv", "whoami"))
    tok = t.token()
    secrets_ = set(EMU.tokens()["refresh_issued"]) | {tok["access_token"], tok["refresh_token"]}
    blob = b"".join(r.out + r.err.encode() for r in outs).decode("utf-8", "replace")
    # the access tokens seen in the token file after each step are in `secrets_` only for the last;
    # all of them start with "EwB" followed by >1000 url-safe characters
    t.check(re.search(r"EwB[A-Za-z0-9_-]{40}", blob) is None, "an access token appears in -vv output")
    for s in secrets_:
        t.check(s[:40] not in blob, "a token (%s...) appears in -vv output" % s[:8])
    t.check("tempauth" not in blob.lower(), "'tempauth' appears in -vv output")
    t.check(re.search(r"(GET|PUT|POST)\s", blob) is not None, "-vv printed no request lines: %r" % blob[:300])
    log = EMU.log()
    t.check(any(x["listener"] == "upload" for x in log) and any(x["listener"] == "download" for x in log),
            "setup: no upload/download traffic")
    t.eq([(x["listener"], x["method"]) for x in log if x["listener"] in ("upload", "download") and x["auth"]], [],
         "requests with Authorization on pre-authenticated hosts")


@test
def test_verbose_vv_shows_headers(t):
    # odcp(1): -v request lines and status, -vv header lines; secrets always redacted
    EMU.seed("/v/a.txt", b"abc")
    t.login()
    r1 = t.ok("-v", "ls", "/v")
    r2 = t.ok("-vv", "ls", "/v")
    t.check(re.search(r"GET \S+ -> 200", r1.err) is not None, "-v shows no request line with status: %r" % r1.err)
    t.check(re.search(r"(?im)^(odcp: )?[<>]?\s*(authorization|host|user-agent|content-type|accept)\s*:", r2.err) is not None,
            "-vv shows no headers: %r" % r2.err[:600])
    t.check(re.search(r"EwB[A-Za-z0-9_-]{20}", r2.err) is None, "-vv shows the bearer token")


# ---- 7. names
@test
def test_names_round_trip(t):
    t.login()
    deep = "/names/# hash/%20/+/sp ace/é/日本"
    t.ok("mkdir", "-p", deep)
    tree = EMU.tree()
    parts = deep.split("/")[1:]
    for i in range(len(parts)):
        p = "/" + "/".join(parts[:i + 1])
        t.check(p in tree and tree[p]["type"] == "folder", "folder %r missing from /tree" % p)
    names = ["#", "%20", "+", "a b.txt", "é.txt", "日本.txt", "+%2B #.txt"]
    for i, n in enumerate(names):
        t.local("src/" + n, ("content of %s %d\n" % (n, i)).encode())
        t.ok("put", t.local("src/" + n), deep + "/")
    tree = EMU.tree()
    under = sorted(p[len(deep) + 1:] for p in tree if p.startswith(deep + "/"))
    t.eq(under, sorted(names), "names in /tree under the deep folder")
    t.eq(sorted(t.ok("ls", deep).lines()), sorted(names), "ls of the deep folder")
    r = t.ok("ls", "-R", "/names")
    t.check(deep[len("/names/"):] + "/日本.txt" in r.lines(), "ls -R /names lacks the deep file: %r" % r.lines())
    os.makedirs(t.local("out"))
    for i, n in enumerate(names):
        t.ok("get", deep + "/" + n, t.local("out"))
        p = t.local("out/" + n)
        t.check(os.path.exists(p) and read(p) == ("content of %s %d\n" % (n, i)).encode(), "get of %r: wrong bytes" % n)
        st = kv_lines(t.ok("stat", deep + "/" + n).text)
        t.eq(st.get("path"), deep + "/" + n, "stat path of %r" % n)
    t.eq(sorted(os.listdir(t.local("out"))), sorted(names), "local names after get")
    # an upload session (> 4 MiB) to an awkward name
    big = os.urandom(SIMPLE_MAX + 1)
    name = "+%20 #日本.bin"
    t.ok("put", t.local("src/" + name, big), deep + "/" + name, timeout=60)
    t.check(EMU.file(deep + "/" + name) == big, "session upload to %r: bytes differ or missing" % name)
    t.ok("get", deep + "/" + name, t.local("out"), timeout=60)
    t.check(read(t.local("out/" + name)) == big, "get of the big %r" % name)


# ---- 8. mkdir
@test
def test_mkdir(t):
    t.login()
    t.ok("mkdir", "/d")
    t.eq(EMU.tree().get("/d", {}).get("type"), "folder", "/d after mkdir")
    r = t.status(5, "mkdir", "/d")
    t.ok("mkdir", "-p", "/d")
    t.ok("mkdir", "-p", "/a/b/c")
    tree = EMU.tree()
    for p in ("/a", "/a/b", "/a/b/c"):
        t.eq(tree.get(p, {}).get("type"), "folder", "%s after mkdir -p /a/b/c" % p)
    r = t.status(4, "mkdir", "/x/y")
    t.check("folder /x does not exist (mkdir -p creates it)" in r.err, "missing parent message: %r" % r.err)
    t.check("/x" not in EMU.tree() and "/x/y" not in EMU.tree(), "mkdir without -p created the missing parent")
    t.ok("mkdir", "/m1", "/a/m2")
    tree = EMU.tree()
    t.check("/m1" in tree and "/a/m2" in tree, "mkdir of two paths")
    EMU.seed("/file.txt", b"x")
    t.check(t.run("mkdir", "-p", "/file.txt/sub").rc not in (0,), "mkdir -p under a file succeeded")
    t.check(t.run("mkdir", "-p", "/file.txt").rc != 0, "mkdir -p of an existing file succeeded")


# ---- 9. rm
@test
def test_rm(t):
    EMU.seed("/full/f.txt", b"f")
    EMU.seed("/full/sub/g.txt", b"g")
    EMU.seed("/e1.txt", b"e")
    EMU.seed("/plain.txt", b"p")
    EMU.seed_folder("/emptydir")
    t.login()
    EMU.clear_log()
    r = t.run("rm", "/full")
    t.check(r.rc != 0, "rm of a non-empty folder without -r succeeded")
    tree = EMU.tree()
    t.check(all(p in tree for p in ("/full", "/full/f.txt", "/full/sub", "/full/sub/g.txt")), "rm without -r deleted something")
    t.eq([x["path"] for x in EMU.log() if x["method"] == "DELETE"], [], "DELETEs by rm without -r")
    t.ok("rm", "/plain.txt")
    t.check("/plain.txt" not in EMU.tree(), "rm of a file did not delete it")
    t.ok("rm", "/emptydir")
    t.check("/emptydir" not in EMU.tree(), "rm of an empty folder did not delete it")
    t.ok("rm", "-r", "/full")
    t.eq([p for p in EMU.tree() if p.startswith("/full")], [], "paths left after rm -r /full")
    EMU.clear_log()
    t.status(2, "rm", "/")
    t.status(2, "rm", "-r", "/")
    t.eq([x["path"] for x in EMU.log() if x["method"] == "DELETE"], [], "DELETEs by rm /")
    t.status(4, "rm", "/missing")
    r = t.run("rm", "/e1.txt", "/missing")
    t.eq(r.rc, 6, "rm existing missing: exit status (%r)" % r)
    t.check("/e1.txt" not in EMU.tree(), "rm existing missing: the existing one was not deleted")


# ---- 10. conflicts and targets
@test
def test_put_conflicts_and_targets(t):
    EMU.seed("/c/x.txt", b"old content")
    big_old = os.urandom(SIMPLE_MAX + 5)
    EMU.seed("/c/big.bin", big_old)
    t.login()
    src = t.local("x.txt", b"new content!")
    big = t.local("big.bin", os.urandom(SIMPLE_MAX + 10))
    r = t.status(5, "put", "--conflict", "fail", src, "/c/x.txt")
    t.eq(EMU.file("/c/x.txt"), b"old content", "content after --conflict fail")
    t.status(5, "put", "--conflict", "fail", big, "/c/big.bin", timeout=60)
    t.check(EMU.file("/c/big.bin") == big_old, "big file changed after --conflict fail")
    t.eq(sorted(p for p in EMU.tree() if p.startswith("/c/")), ["/c/big.bin", "/c/x.txt"], "files after --conflict fail")
    t.ok("put", "--conflict", "rename", src, "/c/x.txt")
    files = sorted(p for p in EMU.tree() if p.startswith("/c/"))
    t.eq(len(files), 3, "files after --conflict rename (%r)" % files)
    t.eq(EMU.file("/c/x.txt"), b"old content", "original after --conflict rename")
    others = [p for p in files if p not in ("/c/x.txt", "/c/big.bin")]
    t.check(len(others) == 1 and EMU.file(others[0]) == b"new content!", "renamed copy missing or wrong: %r" % others)
    t.ok("put", src, "/c/x.txt")
    t.eq(EMU.file("/c/x.txt"), b"new content!", "content after default (replace)")
    t.eq(len([p for p in EMU.tree() if p.startswith("/c/")]), 3, "file count after replace")
    t.ok("put", "--conflict", "replace", big, "/c/big.bin", timeout=60)
    t.check(EMU.file("/c/big.bin") == read(big), "big file not replaced")
    t.status(2, "put", "--conflict", "sometimes", src, "/c/x.txt")
    # targets
    y = t.local("y.txt", b"yyy")
    t.ok("put", y, "/c")
    t.eq(EMU.tree().get("/c/y.txt", {}).get("size"), 3, "put into an existing folder (no slash)")
    y2 = t.local("y2.txt", b"yy2")
    t.ok("put", y2, "/c/")
    t.eq(EMU.tree().get("/c/y2.txt", {}).get("size"), 3, "put into REMOTE ending in /")
    t.ok("put", y2, "/c/renamed.txt")
    t.eq(EMU.file("/c/renamed.txt"), b"yy2", "put to a new file name")
    t.ok("put", y)
    t.eq(EMU.file("/y.txt"), b"yyy", "put with default REMOTE")
    t.eq(sorted(p for p in EMU.tree() if p.startswith("/c/")),
         sorted(["/c/x.txt", "/c/big.bin", "/c/renamed.txt", "/c/y.txt", "/c/y2.txt"] + others), "items under /c")


# ---- 11. a real tree
def _real_tree_source(dst):
    """Real files from the system: common-licenses and python3's doc dir
    (symlinks followed), plus an empty folder."""
    picked = []
    for src, name in (("/usr/share/common-licenses", "common-licenses"), ("/usr/share/doc/python3", "python3-doc")):
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(dst, name), symlinks=False)
            picked.append(src)
    if not picked:
        shutil.copytree("/etc/ssl", os.path.join(dst, "etc-ssl"), symlinks=False, ignore_dangling_symlinks=True)
    os.makedirs(os.path.join(dst, "empty folder"))
    return picked


def _walk(root):
    files, dirs = {}, set()
    for d, ds, fs in os.walk(root):
        rel = os.path.relpath(d, root)
        if rel != ".":
            dirs.add(rel)
        for f in fs:
            files[os.path.normpath(os.path.join(rel, f))] = os.path.join(d, f)
    return files, dirs


@test
def test_real_tree(t):
    src = t.local("tree")
    os.makedirs(src)
    _real_tree_source(src)
    files, dirs = _walk(src)
    t.check(len(files) >= 10 and any("/" in f for f in files), "setup: the real tree is too small")
    t.login()
    EMU.config(page_size=7)              # put -r / get -r must follow nextLinks
    t.ok("put", "-r", src, "/real", timeout=120)
    tree = EMU.tree()
    remote = {p[len("/real/"):]: e for p, e in tree.items() if p.startswith("/real/")}
    t.eq(tree.get("/real", {}).get("type"), "folder", "/real")
    t.eq(sorted(p for p, e in remote.items() if e["type"] == "folder"), sorted(dirs), "remote folders")
    t.eq(sorted(p for p, e in remote.items() if e["type"] == "file"), sorted(files), "remote files")
    for rel, lp in sorted(files.items()):
        e = remote.get(rel)
        if e is None:
            continue
        data = read(lp)
        t.eq((e["size"], e["quickXorHash"]), (len(data), qxh(data)), "size, quickXorHash of %s" % rel)
        t.eq(e["mtime"], int(os.stat(lp).st_mtime), "remote mtime of %s" % rel)
    # put -r into an existing folder lands at folder/basename
    EMU.seed_folder("/dest")
    small = os.path.join(src, "python3-doc") if os.path.isdir(os.path.join(src, "python3-doc")) else src
    t.ok("put", "-r", small, "/dest", timeout=120)
    sf, sd = _walk(small)
    base = "/dest/" + os.path.basename(small)
    tree = EMU.tree()
    t.eq(sorted(p[len(base) + 1:] for p, e in tree.items() if p.startswith(base + "/") and e["type"] == "file"),
         sorted(sf), "files of put -r into an existing folder")
    dl = t.local("dl")
    os.makedirs(dl)
    t.ok("get", "-r", "/real", dl, timeout=120)
    got_files, got_dirs = _walk(os.path.join(dl, "real"))
    t.eq(sorted(got_dirs), sorted(dirs), "downloaded directory structure")
    t.eq(sorted(got_files), sorted(files), "downloaded files")
    for rel in sorted(set(files) & set(got_files)):
        t.check(filecmp.cmp(files[rel], got_files[rel], shallow=False), "downloaded %s differs" % rel)
        t.eq(int(os.stat(got_files[rel]).st_mtime), int(os.stat(files[rel]).st_mtime), "local mtime of %s" % rel)


# ---- 12. stat
@test
def test_stat(t):
    content = b"stat me, please\n" * 7
    EMU.seed("/s/file.txt", content, mtime="2019-05-06T07:08:09Z")
    EMU.seed("/s/sub/x.bin", b"\0" * 1000)
    EMU.seed("/s/other.dat", b"12345")
    t.login()
    tree = EMU.tree()
    st = kv_lines(t.ok("stat", "/s/file.txt").text)
    t.eq(sorted(st), sorted(["path", "id", "type", "size", "created", "modified", "quickXorHash", "eTag", "mimeType"]),
         "stat keys of a file")
    e = tree["/s/file.txt"]
    t.eq(st.get("path"), "/s/file.txt", "path")
    t.eq(st.get("id"), e["id"], "id")
    t.eq(st.get("type"), "file", "type")
    t.eq(st.get("size"), str(len(content)), "size")
    t.eq(st.get("modified"), "2019-05-06T07:08:09Z", "modified")
    t.eq(st.get("quickXorHash"), qxh(content), "quickXorHash")
    t.eq(st.get("mimeType"), "text/plain", "mimeType")
    t.check(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", st.get("created", "")) is not None, "created: %r" % st.get("created"))
    t.check(re.fullmatch(r'"\{[0-9A-F-]{36}\},\d+"', st.get("eTag", "")) is not None, "eTag: %r" % st.get("eTag"))
    st = kv_lines(t.ok("stat", "/s").text)
    t.eq(sorted(st), sorted(["path", "id", "type", "size", "created", "modified", "eTag", "children"]), "stat keys of a folder")
    t.eq(st.get("path"), "/s", "folder path")
    t.eq(st.get("id"), tree["/s"]["id"], "folder id")
    t.eq(st.get("type"), "folder", "folder type")
    t.eq(st.get("size"), str(len(content) + 1000 + 5), "folder size")
    t.eq(st.get("children"), "3", "folder children")
    st2 = kv_lines(t.ok("stat", "/s/sub/x.bin").text)
    t.eq(st2.get("id"), tree["/s/sub/x.bin"]["id"], "id of /s/sub/x.bin")
    t.eq(st2.get("quickXorHash"), qxh(b"\0" * 1000), "quickXorHash of zeros")
    t.status(4, "stat", "/s/nope")


# ---- 13. whoami
@test
def test_whoami(t):
    EMU.seed("/w/a", b"a" * 10)
    EMU.seed("/w/b/c", b"c" * 2000)
    EMU.seed("/w/d", b"")
    EMU.seed("/e", b"e" * 12345)
    t.login()
    used = sum(e["size"] for e in EMU.tree().values() if e["type"] == "file")
    want = ["account: %s (Adele Vance)" % UPN, "drive: %s (business)" % DRIVE_ID, "total: %d" % QUOTA_TOTAL,
            "used: %d" % used, "remaining: %d" % (QUOTA_TOTAL - used), "deleted: 0", "state: normal"]
    r = t.ok("whoami")
    t.eq(r.lines(), want, "whoami")
    t.eq(used, 14355, "setup: used")
    t.ok("rm", "/w/b/c")
    r = t.ok("df")
    used2 = sum(e["size"] for e in EMU.tree().values() if e["type"] == "file")
    d = kv_lines(r.text)
    t.eq(d.get("used"), str(used2), "df used after rm")
    t.eq(d.get("deleted"), "2000", "df deleted after rm")
    t.eq(d.get("remaining"), str(QUOTA_TOTAL - used2 - 2000), "df remaining after rm")


# ---- 14. app-only
@test
def test_app_only(t):
    secret_file = os.path.join(t.tmp, "secret")
    with open(secret_file, "w") as f:
        f.write(SECRET + "\n")
    os.chmod(secret_file, 0o600)
    app = t.profile(tenant="contoso.example", user=UPN, client_secret_file=secret_file)
    t.write_config({"default": app})
    EMU.seed("/app/f.txt", b"app")
    r = t.ok("-vv", "login", timeout=20)
    t.check(SIGNIN_RE.search(r.err) is None and "browser" not in r.err.lower(), "app-only login prompted: %r" % r.err)
    log = EMU.log()
    t.eq([x["path"] for x in log if x["listener"] == "login" and "devicecode" in x["path"]], [], "device code requests")
    tp = token_posts(log)
    t.check(len(tp) == 1 and tp[0]["status"] == 200 and tp[0]["path"].startswith("/contoso.example/"),
            "one successful token POST to the tenant: %r" % [(x["path"], x["status"]) for x in tp])
    EMU.clear_log()
    r2 = t.ok("-vv", "ls", "/app")
    t.eq(r2.lines(), ["f.txt"], "app-only ls")
    g = graph_recs(EMU.log())
    t.check(g and all(x["path"].startswith("/v1.0/users/%s/drive" % UPN) for x in g),
            "app-only requests should address /users/%s/drive: %r" % (UPN, [x["target"] for x in g]))
    t.eq([x["target"] for x in g if x["path"].startswith("/v1.0/me")], [], "/me requests")
    t.check(all(x["status"] == 200 for x in g), "app-only statuses: %r" % [x["status"] for x in g])
    for rr in (r, r2):
        t.check(SECRET not in rr.err and SECRET not in rr.text, "the client secret appears in odcp's output")
    # by drive id instead of user
    t.write_config({"default": t.profile(tenant="contoso.example", drive=DRIVE_ID, client_secret_file=secret_file)})
    t.ok("login", timeout=20)
    EMU.clear_log()
    t.eq(t.ok("ls", "/app").lines(), ["f.txt"], "app-only ls via drive id")
    g = graph_recs(EMU.log())
    t.check(g and all(x["path"].startswith("/v1.0/drives/%s" % DRIVE_ID) for x in g),
            "drive-id requests should address /drives/%s: %r" % (DRIVE_ID, [x["target"] for x in g]))
    # ODCP_CLIENT_SECRET instead of the file
    t.write_config({"default": t.profile(tenant="contoso.example", user=UPN)})
    t.ok("login", timeout=20, env={"ODCP_CLIENT_SECRET": SECRET})
    # app-only tokens expire too: a 401 gets a new client-credentials token and a replay
    EMU.ctl("POST", "/expire_tokens")
    EMU.clear_log()
    t.eq(t.ok("ls", "/app", env={"ODCP_CLIENT_SECRET": SECRET}).lines(), ["f.txt"], "app-only ls after expiry")
    log = EMU.log()
    t.eq([(x["listener"], x["status"]) for x in log if x["listener"] == "login" or x["status"] != 200][:2],
         [("graph", 401), ("login", 200)], "app-only expiry: 401 then a new token")
    # without user/drive
    t.write_config({"default": t.profile(tenant="contoso.example", client_secret_file=secret_file)})
    EMU.clear_log()
    t.status(2, "login", timeout=20)
    t.status(2, "ls", "/")
    t.eq([x["path"] for x in graph_recs(EMU.log()) if x["path"].startswith("/v1.0/me")], [], "/me requests by an app-only profile")
    # tenant common
    t.write_config({"default": t.profile(user=UPN, client_secret_file=secret_file)})
    t.status(2, "login", timeout=20)
    t.write_config({"default": t.profile(tenant="common", user=UPN, client_secret_file=secret_file)})
    t.status(2, "login", timeout=20)
    # a secret in the config file itself is refused
    t.write_config({"default": t.profile(tenant="contoso.example", user=UPN, client_secret=SECRET)})
    r = t.status(2, "login", timeout=20)
    t.check(SECRET not in r.err, "the secret is echoed in the error")
    for out, err in t.outputs:
        t.check(SECRET.encode() not in out and SECRET not in err, "the client secret appears in odcp's output")
    t.eq([x["target"] for x in ALL_LOG + EMU.log() if SECRET in urllib.parse.unquote(x["target"])], [],
         "request targets carrying the client secret")


@test
def test_app_only_tenant_common_any_case(t):
    # Tenant names are case-insensitive; the service refuses client
    # credentials on /common, /organizations and /consumers in any case.
    secret_file = os.path.join(t.tmp, "secret")
    with open(secret_file, "w") as f:
        f.write(SECRET + "\n")
    for tenant in ("Common", "ORGANIZATIONS", "Consumers"):
        t.write_config({"default": t.profile(tenant=tenant, user=UPN, client_secret_file=secret_file)})
        t.status(2, "login", timeout=20)
    t.eq([x["path"] for x in token_posts(EMU.log())], [], "client secrets sent to a multi-tenant endpoint")


# ---- 15. login --browser
def _browser_login(t, tamper=None):
    b = t.bg("login", "--browser", stdin=subprocess.PIPE)
    url = b.wait_line(r"(https://\S+/oauth2/v2\.0/authorize\?\S+)").group(1)
    u = urllib.parse.urlsplit(url)
    q = urllib.parse.parse_qs(u.query)
    t.eq(q.get("code_challenge_method"), ["S256"], "authorize URL code_challenge_method")
    t.check("state" in q and "code_challenge" in q, "authorize URL lacks state or code_challenge")
    ctx = ssl.create_default_context(cafile=EMU.ca)
    conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=20)
    conn.request("GET", u.path + "?" + u.query)
    resp = conn.getresponse()
    resp.read()
    loc = resp.getheader("Location", "")
    conn.close()
    if resp.status != 302 or "code=" not in loc:
        b.kill()
        raise AssertionError("authorize answered %d, Location %r" % (resp.status, loc))
    if tamper:
        loc = tamper(loc)
    b.p.stdin.write(loc.encode() + b"\n")
    b.p.stdin.close()
    return b, b.finish(30)


@test
def test_login_browser(t):
    b, rc = _browser_login(t)
    t.eq(rc, 0, "login --browser exit status (stderr %r)" % b.err_lines)
    if rc == 0:
        t.eq(t.token()["refresh_token"], EMU.tokens()["refresh_issued"][-1], "stored refresh token")
        t.eq(stat.S_IMODE(os.stat(t.token_path()).st_mode), 0o600, "token file mode")
    EMU.seed("/b.txt", b"b")
    t.eq(t.ok("ls", "/").lines(), ["b.txt"], "ls after browser login")
    t.check(not any(x["path"].endswith("/devicecode") for x in EMU.log()), "device code used by --browser")


@test
def test_login_browser_bare_code(t):
    def bare(loc):
        return urllib.parse.parse_qs(urllib.parse.urlsplit(loc).query)["code"][0]
    b, rc = _browser_login(t, bare)
    t.eq(rc, 0, "login --browser with a bare code (stderr %r)" % b.err_lines)
    t.check(os.path.exists(t.token_path()), "no token stored")


@test
def test_login_browser_tampered_state(t):
    def tamper(loc):
        return re.sub(r"state=[^&#]*", "state=AAAAtampered", loc)
    b, rc = _browser_login(t, tamper)
    t.eq(rc, 3, "login --browser with a tampered state")
    t.check(not os.path.exists(t.token_path()), "token stored despite a tampered state")
    t.eq([x for x in token_posts(EMU.log())], [], "code redeemed despite a tampered state")


@test
def test_logout(t):
    t.login()
    t.ok("logout")
    t.check(not os.path.exists(t.token_path()), "token file still there after logout")
    t.status(3, "ls", "/")


# ---- 16. profiles
@test
def test_profiles(t):
    t.write_config({"default": t.profile(), "second": t.profile()})
    EMU.seed("/p.txt", b"p")
    t.login()
    t.login(profile="second")
    t1, t2 = t.token(), t.token("second")
    issued = EMU.tokens()["refresh_issued"]
    t.eq([t1["refresh_token"], t2["refresh_token"]], issued[:2], "refresh tokens of default and second")
    os.unlink(t.token_path())
    t.eq(t.ok("ls", "/", profile="second").lines(), ["p.txt"], "-p second ls /")
    t.status(3, "ls", "/")
    t.eq(t.ok("ls", "/", env={"ODCP_PROFILE": "second"}).lines(), ["p.txt"], "ODCP_PROFILE=second ls /")
    # a refresh in "second" touches only second.token
    t.login()
    d_before = t.token()
    EMU.config(strict_rotation=True)
    EMU.ctl("POST", "/expire_tokens")
    t.ok("-p", "second", "ls", "/")
    t.eq(t.token("second")["refresh_token"], EMU.tokens()["refresh_issued"][-1], "second.token after refresh")
    t.eq(t.token(), d_before, "default.token after a refresh in second")
    r = t.status(2, "ls", "/", profile="nosuch")
    t.check("nosuch" in r.err, "error should name the profile: %r" % r.err)
    t.status(2, "ls", "/", env={"ODCP_PROFILE": "nosuch"})
    # unknown key -> file:line
    t.write_config({"default": t.profile(), "second": t.profile()}, extra="[third]\nclient_id = x\ncolour = blue\n")
    cfgfile = os.path.join(t.cfg, "config")
    with open(cfgfile) as f:
        line = [n for n, l in enumerate(f, 1) if l.startswith("colour")][0]
    r = t.status(2, "ls", "/", profile="third")
    t.check("%s:%d" % (cfgfile, line) in r.err or "config:%d" % line in r.err,
            "error should name config:%d: %r" % (line, r.err))
    t.check("colour" in r.err, "error should name the key: %r" % r.err)
    with open(cfgfile, "w") as f:
        f.write("[default]\nclient_id = %s\nlogin_url = %s\ngraph_url = %s\ncacert = %s\nclinet_id = typo\n"
                % (CLIENT_ID, EMU.urls["login_url"], EMU.urls["graph_url"], EMU.ca))
    r = t.status(2, "ls", "/")
    t.check("%s:6:" % cfgfile in r.err, "error should name config:6: %r" % r.err)


# ---- 17. get
@test
def test_get(t):
    content = os.urandom(70000)
    EMU.seed("/g/f.bin", content, mtime="2018-01-01T00:00:00Z")
    EMU.seed("/g/sub/h.txt", b"h")
    t.login()
    r = t.ok("get", "/g/f.bin", "-")
    t.check(r.out == content, "get - : stdout differs (%d bytes)" % len(r.out))
    d = t.local("dir")
    os.makedirs(d)
    r = t.ok("-v", "get", "/g/f.bin", d)
    t.check(read(os.path.join(d, "f.bin")) == content, "get into an existing directory")
    t.check("/g/f.bin -> %s/f.bin (70000 bytes)" % d in r.err, "-v does not report the file copied: %r" % r.err)
    t.eq(os.listdir(d), ["f.bin"], "directory after get")
    t.ok("get", "/g/f.bin")
    t.check(read(t.local("f.bin")) == content, "get with default LOCAL (cwd/basename)")
    t.eq(int(os.stat(t.local("f.bin")).st_mtime), 1514764800, "mtime from remote")
    # overwrite
    with open(os.path.join(d, "f.bin"), "wb") as f:
        f.write(b"local junk")
    t.ok("get", "/g/f.bin", os.path.join(d, "f.bin"))
    t.check(read(os.path.join(d, "f.bin")) == content, "get over an existing file")
    # errors: nothing left behind
    e = t.local("empty")
    os.makedirs(e)
    t.status(2, "get", "/g", e)
    t.eq(os.listdir(e), [], "after get of a folder without -r")
    t.status(4, "get", "/g/missing.bin", e)
    t.eq(os.listdir(e), [], "after get of a missing item")
    t.status(4, "get", "/g/missing.bin", os.path.join(e, "x.bin"))
    t.eq(os.listdir(e), [], "after get of a missing item to a named file")
    # a download that fails after the redirect: the target must stay untouched
    keep = os.path.join(e, "keep.bin")
    with open(keep, "wb") as f:
        f.write(b"original")
    EMU.config(download_url_lifetime=-10)
    r = t.run("get", "/g/f.bin", keep)
    t.check(r.rc not in (0,), "get with an expired download URL succeeded: %r" % r)
    t.eq(read(keep), b"original", "target after a failed get")
    t.eq(os.listdir(e), ["keep.bin"], "directory after a failed get")
    r = t.run("get", "/g/f.bin", e)
    t.check(r.rc != 0, "get with an expired download URL succeeded (2)")
    t.eq(os.listdir(e), ["keep.bin"], "directory after a failed get into it")
    t.check(not any(x["auth"] for x in EMU.log() if x["listener"] == "download"),
            "Authorization sent to the download host after a 401 there")


# ---- 6 (again). the whole run's log
@test
def test_usage_errors(t):
    # Every usage mistake: exit 2, one line naming what is wrong; nothing sent.
    t.write_config()
    EMU.clear_log()
    cases = [
        (("ls", "/", "-l"), "-l: options go before operands"),
        (("ls", "-q", "/"), "unknown option -q"),
        (("ls", "--bogus"), "unknown option --bogus"),
        (("-r", "put", "a", "b"), "unknown option -r before the command"),
        (("put", "--conflict", "fial", "a", "b"), "--conflict must be fail, replace or rename"),
        (("put", "--fragment-size", "1000", "a", "b"), "--fragment-size must be a multiple of 327680"),
        (("login", "--device", "--browser"), "choose one of --device and --browser"),
        (("stat",), "usage: odcp stat PATH"),
        (("rm", "-rf", "/x"), "unknown option -f"),
        (("frobnicate",), "unknown command 'frobnicate'"),
        (("--timeout", "0", "ls"), "--timeout must be 1 to 3600"),
    ]
    for args, want in cases:
        r = t.status(2, *args)
        t.check(want in r.err, "odcp %s: %r does not say %r" % (" ".join(args), r.err, want))
    t.eq(EMU.log(), [], "requests sent by usage errors")


@test
def test_untrusted_certificate_not_retried(t):
    # A certificate odcp cannot verify is final: one line, exit 1, no retry.
    t.write_config({"default": t.profile(cacert=None)})
    EMU.seed("/f.txt", b"x")
    os.makedirs(t.cfg, exist_ok=True)
    with open(t.token_path(), "w") as f:
        f.write("refresh_token=r\naccess_token=a\nexpires=%d\n" % (time.time() + 3600))
    t0 = time.time()
    r = t.status(1, "ls", "/", env={"SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt"})
    t.check("certificate not trusted" in r.err, "message: %r" % r.err)
    t.check(time.time() - t0 < 5, "took %.1fs: retried?" % (time.time() - t0))


@test
def test_rename_reports_stored_name(t):
    t.write_config()
    t.login()
    src = t.local("todo.txt", b"one")
    t.ok("put", src, "/Notes/")
    r = t.ok("put", "--conflict", "rename", src, "/Notes/")
    t.check("/Notes/todo.txt exists: stored as " in r.err, "rename notice: %r" % r.err)
    names = sorted(p for p in EMU.tree() if p.startswith("/Notes/"))
    t.eq(len(names), 2, "files in /Notes")
    t.check(r.err.strip().split("stored as ")[-1] in [n.split("/")[-1] for n in names],
            "the reported name is a stored one: %r vs %r" % (r.err, names))


@test
def test_listing_asks_only_needed_fields(t):
    t.write_config()
    t.login()
    EMU.seed("/d/a.txt", b"a")
    EMU.clear_log()
    t.eq(t.ok("ls", "/d").lines(), ["a.txt"], "ls /d")
    kids = [x for x in EMU.log() if x["listener"] == "graph" and "/children" in x["target"]]
    t.check(kids and all("$select=" in x["target"] and "downloadUrl" not in x["target"] for x in kids),
            "children requests without $select: %r" % [x["target"] for x in kids])


@test
def test_zz_no_authorization_on_preauth_hosts(t):
    t.login()
    t.ok("put", t.local("big.bin", os.urandom(SIMPLE_MAX + 1)), "/big.bin", timeout=60)
    t.ok("get", "/big.bin", t.local("back.bin"), timeout=60)
    log = ALL_LOG + EMU.log()
    pre = [x for x in log if x["listener"] in ("download", "upload")]
    t.check(len(pre) >= 2, "no download/upload traffic in the run")
    bad = [(x["listener"], x["method"], x["status"]) for x in pre if x["auth"]]
    t.eq(bad, [], "requests with Authorization on download/upload hosts across the run (%d checked)" % len(pre))
    t.eq([x["path"] for x in log if x["listener"] == "graph" and not x["auth"]], [],
         "graph requests without Authorization across the run")


# ------------------------------------------------------------ main
def main(tests, suite, script):
    """Run the tests selected by -k (all by default) against one emulator;
    the last line is "SUITE: N passed, M failed".  tests/faults.py uses it too."""
    global VERBOSE
    args = sys.argv[1:]
    pat = None
    while args:
        a = args.pop(0)
        if a == "-k" and args:
            pat = args.pop(0)
        elif a == "-v":
            VERBOSE = True
        else:
            print("usage: python3 %s [-k SUBSTRING[,SUBSTRING...]] [-v]" % script, file=sys.stderr)
            return 2
    if not os.access(ODCP, os.X_OK):
        print("%s: %s is missing; run make" % (suite, ODCP), file=sys.stderr)
        print("%s: 0 passed, 1 failed" % suite)
        return 1
    _check_qxh()
    pats = pat.split(",") if pat else None     # -k a,b: either substring
    selected = [f for f in tests if pats is None or any(p in f.__name__[len("test_"):] for p in pats)]
    t0 = time.time()
    try:
        EMU.start()
        passed, failed = run_tests(selected)
    except Exception as e:
        print("FAIL harness: %s: %s" % (type(e).__name__, e))
        passed, failed = 0, 1
    finally:
        EMU.stop()
    print("# %.1fs" % (time.time() - t0))
    print("%s: %d passed, %d failed" % (suite, passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    sys.exit(main(TESTS, "e2e-proxy" if VIA_PROXY else "e2e", "tests/e2e.py"))
