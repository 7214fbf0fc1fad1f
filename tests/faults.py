#!/usr/bin/env python3
"""The fault matrix: odcp against tests/fakegraph.py with faults injected
(POST /faults; see fakegraph.py's docstring).  Python 3 standard library.

    python3 tests/faults.py [-k SUBSTRING[,SUBSTRING...]] [-v]

Uses tests/e2e.py's harness (one emulator for the run, a fresh config dir
per test, ODCP_RETRY_SCALE=0.01 so a Retry-After of 100 s waits 1 s).  Each
test injects one kind of failure into one command and asserts the end:
the transfer is byte-identical, or odcp exits with the documented status
and one error line, no file that failed its check has the target's name,
and the token file is as it was.  The assertions read the emulator's
request log (what odcp sent, to which host, with or without
Authorization), not only odcp's output.  Last line: "faults: N passed,
M failed".
"""
import os, re, resource, signal, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import e2e  # noqa: E402
from e2e import EMU, MiB, UNIT, read, qxh, kv_lines, content_range  # noqa: E402

TESTS = []
SCALE = 0.01                     # ODCP_RETRY_SCALE in e2e.Ctx.env
FRAG = 4 * UNIT                  # 1.25 MiB fragments keep the uploads short
PUT_FRAG = ("--fragment-size", str(FRAG))


def test(fn):
    TESTS.append(fn)
    return fn


def faults(*rules):
    return EMU.ctl("POST", "/faults", {"rules": list(rules)})["ids"]


def rules():
    return {r["id"]: r for r in EMU.ctl("GET", "/faults")["rules"]}


def blob(n, seed=1):
    """n reproducible, incompressible-looking bytes."""
    out, x = bytearray(), seed
    while len(out) < n:
        x = (x * 6364136223846793005 + 1442695040888963407) & (2 ** 64 - 1)
        out += x.to_bytes(8, "little")
    return bytes(out[:n])


def ups(log):
    return [x for x in log if x["listener"] == "upload"]


def frags(log):
    """(start, end, total, status, target) of each fragment PUT."""
    return [content_range(x) + (x["status"], x["target"]) for x in ups(log)
            if x["method"] == "PUT" and content_range(x)]


def sessions_created(log):
    return [x for x in log if x["listener"] == "graph" and x["method"] == "POST"
            and x["path"].endswith("/createUploadSession")]


def no_auth_on_preauth(t, log, what):
    bad = [(x["listener"], x["method"], x["status"]) for x in log if x["listener"] in ("download", "upload") and x["auth"]]
    t.eq(bad, [], "%s: Authorization sent to a pre-authenticated host" % what)


def token_snapshot(t):
    return read(t.token_path())


def put_big(t, size, remote="/f/big.bin", seed=7, glob=(), timeout=120, want=0):
    """put a file of size bytes, above the simple-upload limit, with global
    options glob; returns its bytes, the run and the emulator's log."""
    assert size > e2e.SIMPLE_MAX, "an upload session needs more than 4 MiB"
    data = blob(size, seed)
    src = t.local("big-%d.bin" % seed, data) if not os.path.exists(t.local("big-%d.bin" % seed)) else t.local("big-%d.bin" % seed)
    EMU.clear_log()
    r = t.status(want, *glob, "put", *PUT_FRAG, src, remote, timeout=timeout)
    return data, r, EMU.log()


def uploaded_ok(t, remote, data, what):
    e = EMU.tree().get(remote)
    if t.check(e is not None, "%s: %s missing on the service" % (what, remote)):
        t.eq((e["size"], e["quickXorHash"]), (len(data), qxh(data)), "%s: size and quickXorHash on the service" % what)
        t.check(EMU.file(remote) == data, "%s: bytes on the service differ" % what)


def contiguous(t, fr, size, what):
    """Fragments accepted (2xx) cover 0..size-1 with no gap, and every
    fragment sent keeps the rules: a multiple of 320 KiB unless it ends
    the file, under 60 MiB, the file's size as total (graph-api.md 7.2)."""
    for a, b, total, st, _ in fr:
        n = b - a + 1
        t.check(total == size and n < e2e.FRAG_LIMIT and (n % UNIT == 0 or b + 1 == size),
                "%s: fragment %d-%d/%d breaks the rules" % (what, a, b, total))
    got = sorted((a, b) for a, b, _, st, _ in fr if st in (200, 201, 202))
    pos = 0
    for a, b in got:
        if a > pos:
            t.check(False, "%s: gap in accepted fragments at %d: %r" % (what, pos, got))
            return
        pos = max(pos, b + 1)
    t.eq(pos, size, "%s: bytes covered by accepted fragments" % what)


def gap_after(log, rid):
    """Seconds between the request a rule fired on and the next request."""
    i = [n for n, x in enumerate(log) if x.get("fault") == rid]
    if not i or i[-1] + 1 >= len(log):
        return None
    return log[i[-1] + 1]["t"] - log[i[-1]]["t"]


# ============================================================ uploads
@test
def test_put_connection_dropped_mid_fragment(t):
    """The upload host reads 100 KiB of fragment 2 and resets the
    connection: odcp asks the session (GET, no Authorization) and sends
    from the server's nextExpectedRanges."""
    t.login()
    EMU.seed_folder("/f")
    size = 5 * FRAG + 1000
    rid, = faults({"listener": "upload", "method": "PUT", "nth": 2, "drop_request_after": 100 * 1024})
    data, r, log = put_big(t, size)
    uploaded_ok(t, "/f/big.bin", data, "dropped fragment")
    u = ups(log)
    i = [n for n, x in enumerate(u) if x.get("fault") == rid]
    t.check(len(i) == 1 and i[0] + 1 < len(u) and u[i[0] + 1]["method"] == "GET",
            "after the drop: want a GET on the session, got %r" % [(x["method"], x["status"]) for x in u])
    fr = frags(log)
    t.eq([a for a, *_ in fr], [0, FRAG, FRAG, 2 * FRAG, 3 * FRAG, 4 * FRAG, 5 * FRAG], "fragment starts")
    contiguous(t, fr, size, "dropped fragment")
    t.eq(len(sessions_created(log)), 1, "upload sessions created")
    no_auth_on_preauth(t, log, "dropped fragment")
    t.note("%d bytes reached the upload host for a file of %d (the dropped fragment's 100 KiB and its resend)"
           % (sum(x["body_len"] for x in u if x["method"] == "PUT"), size))


@test
def test_put_fragment_answer_broken(t):
    """The 202 to a fragment arrives but its JSON breaks off (chunked body
    cut short, or the connection dropped after a few body bytes): the
    session is asked where it stands (GET, no Authorization) and the
    upload goes on from its answer, in whole fragments, byte-identical."""
    t.login()
    EMU.seed_folder("/f")
    size = 5 * FRAG
    for n, rule in enumerate(({"truncate_chunked": True}, {"drop_response_after": 10})):
        faults(dict(rule, listener="upload", method="PUT", nth=2))
        data, r, log = put_big(t, size, remote="/f/broken%d.bin" % n)
        u = ups(log)
        t.eq([(x["method"], x["status"]) for x in u[1:4]], [("PUT", 202), ("GET", 200), ("PUT", 202)],
             "%r on a fragment's 202: ask the session, then go on" % rule)
        t.eq([(a, b) for a, b, *_ in frags(log)][2:3], [(2 * FRAG, 3 * FRAG - 1)],
             "%r: the fragment after the session's answer" % rule)
        contiguous(t, frags(log), size, "%r on a 202" % rule)
        uploaded_ok(t, "/f/broken%d.bin" % n, data, "%r on a 202" % rule)
        no_auth_on_preauth(t, log, "%r on a 202" % rule)
        EMU.ctl("POST", "/faults/clear")


@test
def test_put_429_retry_after_on_fragment(t):
    """429 with Retry-After: 100 on fragment 3 is waited out (scaled to 1 s),
    then the session is asked and the upload ends byte-identical."""
    t.login()
    EMU.seed_folder("/f")
    size = 4 * FRAG
    rid, = faults({"listener": "upload", "method": "PUT", "nth": 3, "status": 429, "headers": {"Retry-After": "100"}})
    data, r, log = put_big(t, size)
    uploaded_ok(t, "/f/big.bin", data, "429 on a fragment")
    g = gap_after(ups(log), rid)
    t.note("waited %.2f s after 429 with Retry-After: 100 (scaled by %g: %.2f s)" % (g or -1, SCALE, 100 * SCALE))
    t.check(g is not None and g >= 100 * SCALE * 0.95, "wait after 429 Retry-After 100: %r s, want >= %.2f" % (g, 100 * SCALE))
    t.check(g is not None and g < 100 * SCALE + 30, "wait after 429 far too long: %r" % g)
    contiguous(t, frags(log), size, "429")
    t.eq(len(sessions_created(log)), 1, "upload sessions created")
    t.eq([(x["method"], x["status"]) for x in ups(log)][:4], [("PUT", 202), ("PUT", 202), ("PUT", 429), ("GET", 200)],
         "after the wait, the session is asked before any fragment is sent again")
    no_auth_on_preauth(t, log, "429 on a fragment")


@test
def test_put_500_then_success(t):
    """500 on a fragment and on a simple upload: tried again, ends intact."""
    t.login()
    EMU.seed_folder("/f")
    faults({"listener": "upload", "method": "PUT", "nth": 2, "status": 500})
    data, r, log = put_big(t, 4 * FRAG + 5)
    uploaded_ok(t, "/f/big.bin", data, "500 on a fragment")
    contiguous(t, frags(log), 4 * FRAG + 5, "500 on a fragment")
    t.eq([f[3] for f in frags(log)][:2], [202, 500], "fragment statuses")
    t.eq([(x["method"], x["status"]) for x in ups(log)][:3], [("PUT", 202), ("PUT", 500), ("GET", 200)],
         "after a 500 on a fragment, the session is asked")
    for name, small in (("small.txt", b"small file\n" * 100), ("zero.bin", b""), ("four.bin", blob(e2e.SIMPLE_MAX, 3))):
        EMU.ctl("POST", "/faults/clear")
        faults({"listener": "graph", "method": "PUT", "status": 500, "times": 2})
        EMU.clear_log()
        t.ok("put", t.local(name, small), "/f/" + name)
        uploaded_ok(t, "/f/" + name, small, "500 on a simple upload of %s" % name)
        puts = [x["status"] for x in EMU.log() if x["listener"] == "graph" and x["method"] == "PUT"]
        t.eq(puts[:3], [500, 500, 201], "%s: simple upload PUT statuses" % name)
        t.eq(ups(EMU.log()), [], "%s: upload-session traffic for a simple upload" % name)


@test
def test_put_401_mid_upload(t):
    """put -r of two large files; every access token expires while the
    first one's fragments are in flight (they need none: pre-authenticated).
    The second file's first Graph request gets 401: odcp renews once,
    replays, and both files arrive; the token file gets the new tokens."""
    t.login()
    EMU.seed_folder("/f")
    a, b = blob(4 * FRAG, 41), blob(4 * FRAG + 9, 42)
    t.local("tree/a.bin", a)
    t.local("tree/b.bin", b)
    before = t.token()
    faults({"listener": "upload", "method": "PUT", "nth": 2, "expire_token": True})
    EMU.clear_log()
    t.ok("put", "-r", *PUT_FRAG, t.local("tree"), "/f/tree", timeout=120)
    log = EMU.log()
    uploaded_ok(t, "/f/tree/a.bin", a, "first file")
    uploaded_ok(t, "/f/tree/b.bin", b, "second file, after the 401")
    g = [x for x in log if x["listener"] == "graph"]
    i401 = [n for n, x in enumerate(g) if x["status"] == 401]
    t.eq(len(i401), 1, "401s from Graph after the tokens expired")
    if i401 and i401[0] + 1 < len(g):
        t.eq((g[i401[0] + 1]["method"], g[i401[0] + 1]["path"]), (g[i401[0]]["method"], g[i401[0]]["path"]),
             "the request after the 401 is the same one, replayed")
    t.eq(len(e2e.token_posts(log)), 1, "token refreshes")
    t.check(t.token().get("access_token") != before.get("access_token"), "access token not replaced in the token file")
    t.eq(t.token().get("refresh_token"), EMU.tokens()["refresh_issued"][-1], "stored refresh token")
    no_auth_on_preauth(t, log, "401 mid-upload")


@test
def test_put_401_from_upload_host(t):
    """A 401 from the upload host is not a Graph token problem: no refresh,
    the session is asked and the upload goes on."""
    t.login()
    EMU.seed_folder("/f")
    faults({"listener": "upload", "method": "PUT", "nth": 2, "status": 401})
    data, r, log = put_big(t, 4 * FRAG)
    uploaded_ok(t, "/f/big.bin", data, "401 from the upload host")
    t.eq([f[3] for f in frags(log)][:2], [202, 401], "fragment statuses")
    t.eq(len(e2e.token_posts(log)), 0, "token refreshes for an upload-host 401")
    no_auth_on_preauth(t, log, "401 from the upload host")


@test
def test_second_401_exits_3_token_untouched(t):
    """Graph refuses the access token, and the renewed one too: exit 3 with
    'odcp login' named, one refresh, and the token file keeps the rotated
    refresh token (it is not erased, nor left at the old one)."""
    t.login()
    EMU.seed_folder("/f")
    faults({"listener": "graph", "status": 401, "times": 10})
    EMU.clear_log()
    r = t.status(3, "ls", "/f")
    t.check("odcp login" in r.err, "exit 3 without saying to sign in: %r" % r.err)
    log = EMU.log()
    t.eq(len(e2e.token_posts(log)), 1, "refreshes after two 401s")
    t.eq([x["status"] for x in log if x["listener"] == "graph"], [401, 401], "Graph statuses")
    t.eq(t.token().get("refresh_token"), EMU.tokens()["refresh_issued"][-1], "refresh token kept in the token file")
    EMU.ctl("POST", "/faults/clear")
    t.ok("ls", "/f")


@test
def test_put_session_expired(t):
    """The session vanishes under fragment 3 (404 uploadSessionNotFound):
    a new session, from byte 0, and every later fragment goes to the new URL."""
    t.login()
    EMU.seed_folder("/f")
    size = 4 * FRAG + 77
    faults({"listener": "upload", "method": "PUT", "nth": 3, "expire_session": True})
    data, r, log = put_big(t, size)
    uploaded_ok(t, "/f/big.bin", data, "expired session")
    t.eq(len(sessions_created(log)), 2, "upload sessions created")
    fr = frags(log)
    urls = []
    for *_, tgt in fr:
        if tgt not in urls:
            urls.append(tgt)
    t.eq(len(urls), 2, "distinct session URLs used")
    if len(urls) == 2:
        first_new = [n for n, f in enumerate(fr) if f[4] == urls[1]][0]
        t.check(all(f[4] == urls[1] for f in fr[first_new:]), "a fragment went to the old session after the new one")
        t.eq(fr[first_new][0], 0, "the new session starts at byte")
        contiguous(t, [f for f in fr if f[4] == urls[1]], size, "new session")


@test
def test_put_416_after_lost_response(t):
    """Fragment 2 is stored but its answer lost; fragment 3 then gets 416.
    odcp asks the session each time and ends byte-identical, never past a cap."""
    t.login()
    EMU.seed_folder("/f")
    size = 5 * FRAG
    faults({"listener": "upload", "method": "PUT", "nth": 2, "lose_response": True},
           {"listener": "upload", "method": "PUT", "nth": 3, "status": 416})
    data, r, log = put_big(t, size)
    uploaded_ok(t, "/f/big.bin", data, "416 after a lost response")
    gets = [x for x in ups(log) if x["method"] == "GET"]
    t.check(len(gets) >= 2, "session status asked %d times, want >= 2" % len(gets))
    fr = frags(log)
    t.check(len(fr) <= 8, "fragments sent: %d for 5" % len(fr))
    contiguous(t, fr, size, "416")


@test
def test_put_last_fragment_answer_lost(t):
    """The service commits the file on the last fragment, but its answer is
    lost.  The session is gone then (404): odcp finds the committed item
    (size, mtime, quickXorHash) and is done.  It sends no byte again, makes
    no second session, and --conflict fail does not trip over its own
    file.  A run that gives up right there (--retries 0) keeps its state
    file, and the rerun finds the upload finished without sending a byte."""
    t.login()
    EMU.seed_folder("/f")
    size = 4 * FRAG + 10
    data = blob(size, 51)
    src = t.local("last.bin", data)
    for conflict in ("replace", "fail"):
        EMU.ctl("POST", "/faults/clear")
        faults({"listener": "upload", "method": "PUT", "nth": 5, "lose_response": True})
        EMU.clear_log()
        remote = "/f/last-%s.bin" % conflict
        t.ok("put", "--conflict", conflict, *PUT_FRAG, src, remote, timeout=60)
        log = EMU.log()
        uploaded_ok(t, remote, data, "%s, last answer lost" % conflict)
        t.eq(len(sessions_created(log)), 1, "%s: upload sessions created" % conflict)
        t.eq(sum(x["body_len"] for x in ups(log) if x["method"] == "PUT"), size,
             "%s: bytes sent for a file of %d" % (conflict, size))
        t.eq(len(frags(log)), 5, "%s: fragments sent" % conflict)
    EMU.ctl("POST", "/faults/clear")
    faults({"listener": "upload", "method": "PUT", "nth": 5, "lose_response": True})
    r = t.status(1, "--retries", "0", "put", *PUT_FRAG, src, "/f/last-rerun.bin", timeout=60)
    t.check("run the same put again" in r.err, "the error does not say a rerun resumes: %r" % r.err)
    uploaded_ok(t, "/f/last-rerun.bin", data, "committed, answer lost, run given up")
    state = os.path.join(t.cfg, "state")
    t.eq(len([f for f in os.listdir(state) if "-put-" in f]), 1, "state files kept by the run that gave up")
    EMU.ctl("POST", "/faults/clear")
    EMU.clear_log()
    r = t.ok("put", *PUT_FRAG, src, "/f/last-rerun.bin", timeout=60)
    t.check("had finished" in r.err, "the rerun does not say the upload had finished: %r" % r.err)
    log = EMU.log()
    t.eq([x["method"] for x in ups(log)], ["GET"], "the rerun's requests to the upload host")
    t.eq(len(sessions_created(log)), 0, "sessions created by the rerun")
    t.eq([f for f in os.listdir(state) if "-put-" in f], [], "state files after the rerun")
    # the session vanishes uncommitted, and the item at the path has the
    # size and mtime of the upload but other bytes: not taken for it
    other = blob(size, 52)
    faults({"listener": "upload", "method": "PUT", "nth": 3, "expire_session": True})
    EMU.seed("/f/same-size.bin", other, mtime=int(os.stat(src).st_mtime))
    EMU.clear_log()
    t.ok("put", *PUT_FRAG, src, "/f/same-size.bin", timeout=60)
    t.eq(len(sessions_created(EMU.log())), 2, "sessions when the committed item is another file")
    uploaded_ok(t, "/f/same-size.bin", data, "same size, other bytes")


@test
def test_put_last_fragment_slow_answer(t):
    """The service thinks for longer than --timeout before answering the
    last fragment (it assembles the file, graph-api.md 7.4): odcp waits up
    to five timeouts for that answer, so the upload ends without asking
    the session anything."""
    t.login()
    EMU.seed_folder("/f")
    size = 4 * FRAG + 10
    rid, = faults({"listener": "upload", "method": "PUT", "nth": 5, "delay": 5})
    t0 = time.time()
    data, r, log = put_big(t, size, glob=("--timeout", "2"))
    uploaded_ok(t, "/f/big.bin", data, "slow answer to the last fragment")
    t.eq([(x["method"], x["status"]) for x in ups(log)], [("PUT", 202)] * 4 + [("PUT", 201)],
         "requests to the upload host")
    t.eq(rules()[rid]["fired"], 1, "the delay fired")
    t.note("the last fragment answered after 5 s, --timeout 2: put ended after %.1f s" % (time.time() - t0))


@test
def test_put_next_expected_ranges_shapes(t):
    """The session's answers name what it needs in the shapes the reference
    allows: "N-", "N-M", several ranges.  odcp follows the server, and a
    range beyond the file is a protocol error (exit 1, nothing committed)."""
    t.login()
    EMU.seed_folder("/f")
    size = 4 * FRAG
    # fragment 2 fails; the status answer says only FRAG-(2*FRAG-1) and 3*FRAG- are missing
    faults({"listener": "upload", "method": "PUT", "nth": 2, "status": 503},
           {"listener": "upload", "method": "GET", "nth": 1,
            "next_expected_ranges": ["%d-%d" % (FRAG, 2 * FRAG - 1), "%d-" % (3 * FRAG)]})
    data, r, log = put_big(t, size)
    fr = frags(log)
    starts = [a for a, *_ in fr]
    u = ups(log)
    t.eq([(x["method"], x["status"]) for x in u[1:4]], [("PUT", 503), ("GET", 200), ("PUT", 202)],
         "after a 503 on a fragment: ask the session, then send")
    t.eq(starts[:2], [0, FRAG], "first fragments")
    t.check(FRAG in starts[2:] and 3 * FRAG in starts[2:], "after the status answer, want fragments at %d and %d: %r"
            % (FRAG, 3 * FRAG, starts))
    # what the server really lacks (2*FRAG..3*FRAG-1) is asked for again at the end
    uploaded_ok(t, "/f/big.bin", data, "two-range answer")
    contiguous(t, fr, size, "two-range answer")
    # two ranges that touch, the first not a whole number of 320 KiB
    # units: one run of missing bytes, sent in whole fragments
    faults({"listener": "upload", "method": "PUT", "nth": 2, "status": 503},
           {"listener": "upload", "method": "GET", "nth": 1,
            "next_expected_ranges": ["%d-%d" % (FRAG + 1000, FRAG + 5000), "%d-" % (FRAG + 5001), "%d-%d" % (FRAG, FRAG + 999)]})
    data, r, log = put_big(t, size, remote="/f/touch.bin")
    fr = frags(log)
    contiguous(t, fr, size, "touching ranges")
    t.eq([(a, b) for a, b, *_ in fr[2:3]], [(FRAG, 2 * FRAG - 1)], "the fragment after touching ranges")
    uploaded_ok(t, "/f/touch.bin", data, "touching ranges")
    # a hole in the middle shorter than one unit cannot be sent by the
    # rules: a protocol error, and no fragment that breaks them
    faults({"listener": "upload", "method": "PUT", "nth": 2, "status": 503},
           {"listener": "upload", "method": "GET", "nth": 1,
            "next_expected_ranges": ["%d-%d" % (FRAG, FRAG + 1000), "%d-" % (2 * FRAG)]})
    data, r, log = put_big(t, size, remote="/f/hole.bin", want=1)
    bad = [(a, b) for a, b, total, *_ in frags(log) if (b - a + 1) % UNIT and b + 1 != size]
    t.eq(bad, [], "fragments breaking the 320 KiB rule")
    t.check("less than one 320 KiB unit" in r.err, "no reason for the hole: %r" % r.err)
    t.check("/f/hole.bin" not in EMU.tree(), "a file was committed after a hole")
    # nonsense: a range past the end of the file
    faults({"listener": "upload", "method": "PUT", "nth": 1, "status": 503},
           {"listener": "upload", "method": "GET", "nth": 1, "next_expected_ranges": ["%d-" % (size + UNIT)]})
    EMU.clear_log()
    r = t.status(1, "put", *PUT_FRAG, t.local("big-7.bin"), "/f/bad.bin", timeout=60)
    t.eq(len([x for x in ups(EMU.log()) if x["method"] == "GET"]), 1, "status requests before the protocol error")
    t.check(re.fullmatch(r"odcp: \S+: improper upload session reply for /f/bad\.bin: range beyond the end of the file "
                         r"at byte \d+ of the answer\n", r.err) is not None, "no protocol error named: %r" % r.err)
    t.check("/f/bad.bin" not in EMU.tree(), "a file was committed after a nonsense range")
    t.check("tempauth" not in r.err and "/up/" not in r.err, "upload URL in the error: %r" % r.err)


@test
def test_put_fragment_loop_is_capped(t):
    """A session that always answers 'send from 0' and always fails the
    fragment cannot keep odcp busy forever: it gives up with exit 1."""
    t.login()
    EMU.seed_folder("/f")
    faults({"listener": "upload", "method": "PUT", "status": 500, "times": 10000},
           {"listener": "upload", "method": "GET", "times": 10000, "next_expected_ranges": ["0-"]})
    EMU.clear_log()
    r = t.status(1, "--retries", "3", "put", *PUT_FRAG, t.local("x.bin", blob(4 * FRAG)), "/f/x.bin", timeout=120)
    n = len(frags(EMU.log()))
    t.check(n <= 20, "fragments sent before giving up: %d" % n)
    t.check("/f/x.bin" not in EMU.tree(), "file created")
    # every fragment taken (202), and yet the session asks for byte 0
    # again, or alternates between two places: no progress spends the
    # retries, whatever the file's size
    src = t.local("y.bin", blob(40 * FRAG))
    for n, first in enumerate((1, 2)):
        EMU.ctl("POST", "/faults/clear")
        faults({"listener": "upload", "method": "PUT", "nth": first, "times": 10000, "next_expected_ranges": ["0-"]})
        EMU.clear_log()
        r = t.status(1, "--retries", "3", "put", *PUT_FRAG, src, "/f/y%d.bin" % n, timeout=120)
        sent = len(frags(EMU.log()))
        t.note("202 answers asking for byte 0 from fragment %d on, --retries 3: %d fragments sent of 40, then: %s"
               % (first, sent, r.err.strip()))
        t.check(sent <= 12, "fragments sent for a session that does not move on: %d" % sent)
        t.check(re.search(r"again|stopped", r.err) is not None, "no reason given: %r" % r.err)


@test
def test_put_resume_across_runs(t):
    """A run breaks off mid-upload (the upload host keeps failing); the next
    run of the same put resumes from the server's nextExpectedRanges with
    fewer bytes than the file; a changed local file starts afresh, says why,
    and cancels the stale session."""
    t.login()
    EMU.seed_folder("/f")
    size = 6 * FRAG
    data = blob(size, 11)
    src = t.local("resume.bin", data)
    faults({"listener": "upload", "method": "PUT", "nth": 4, "status": 503, "times": 1000})
    EMU.clear_log()
    r = t.status(1, "--retries", "1", "put", *PUT_FRAG, src, "/f/resume.bin", timeout=60)
    t.check(re.search(r"resum|again|rerun", r.err, re.I) is not None, "the error does not say a rerun resumes: %r" % r.err)
    state = os.path.join(t.cfg, "state")
    files = os.listdir(state) if os.path.isdir(state) else []
    t.eq(len([f for f in files if "-put-" in f]), 1, "put state files after the failed run")
    for f in files:
        st = os.stat(os.path.join(state, f))
        t.eq(st.st_mode & 0o777, 0o600, "mode of state file %s" % f)
        kv = dict(l.split("=", 1) for l in read(os.path.join(state, f)).decode().splitlines() if "=" in l)
        t.eq(sorted(kv), ["conflict", "expires", "fragment", "local", "path", "url"], "keys of the state file")
        t.eq((kv.get("path"), kv.get("fragment"), kv.get("conflict")), ("/f/resume.bin", str(FRAG), "replace"),
             "path, fragment size and conflict policy in the state file")
        t.check(kv.get("local", "").startswith("%d " % size), "local identity does not begin with the size: %r"
                % kv.get("local"))
        t.check(kv.get("url", "").startswith("https://") and int(kv.get("expires", "0")) > time.time(),
                "session URL and expiry in the state file")
    t.check("/up/" not in r.err and "/up/" not in r.text, "upload URL printed")
    EMU.ctl("POST", "/faults/clear")
    EMU.clear_log()
    r = t.ok("-v", "put", *PUT_FRAG, src, "/f/resume.bin", timeout=60)
    log = EMU.log()
    sent = sum(x["body_len"] for x in ups(log) if x["method"] == "PUT")
    t.note("the resuming run sent %d of %d bytes" % (sent, size))
    t.check(0 < sent < size, "second run sent %d bytes of %d" % (sent, size))
    t.eq(len(sessions_created(log)), 0, "sessions created by the resuming run")
    t.check("/up/" not in r.err, "upload URL in -v output")
    uploaded_ok(t, "/f/resume.bin", data, "resumed across runs")
    t.eq([f for f in (os.listdir(state) if os.path.isdir(state) else []) if "-put-" in f], [], "state files left after success")
    # the same again, but the local file changes between the runs
    faults({"listener": "upload", "method": "PUT", "nth": 3, "status": 503, "times": 1000})
    t.status(1, "--retries", "1", "put", *PUT_FRAG, src, "/f/changed.bin", timeout=60)
    EMU.ctl("POST", "/faults/clear")
    data2 = blob(size, 12)
    with open(src, "wb") as f:
        f.write(data2)
    EMU.clear_log()
    r = t.ok("put", *PUT_FRAG, src, "/f/changed.bin", timeout=60)
    t.check(re.search(r"changed|afresh|start", r.err, re.I) is not None, "no reason given for starting afresh: %r" % r.err)
    log = EMU.log()
    t.check(any(x["method"] == "DELETE" for x in ups(log)), "the stale session was not cancelled with DELETE")
    t.eq(len(sessions_created(log)), 1, "sessions created after the local file changed")
    uploaded_ok(t, "/f/changed.bin", data2, "changed file uploaded afresh")
    # rewritten in place with the same size and its old mtime put back
    # (touch -r): the change time still tells
    faults({"listener": "upload", "method": "PUT", "nth": 3, "status": 503, "times": 1000})
    t.status(1, "--retries", "1", "put", *PUT_FRAG, src, "/f/sneaky.bin", timeout=60)
    EMU.ctl("POST", "/faults/clear")
    st = os.stat(src)
    data3 = blob(size, 13)
    with open(src, "r+b") as f:
        f.write(data3)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    EMU.clear_log()
    r = t.ok("put", *PUT_FRAG, src, "/f/sneaky.bin", timeout=60)
    t.check("changed" in r.err, "no reason given for starting afresh: %r" % r.err)
    t.eq(len(sessions_created(EMU.log())), 1, "sessions created after a rewrite that kept the mtime")
    uploaded_ok(t, "/f/sneaky.bin", data3, "rewritten file, mtime kept")


@test
def test_interrupted_put_says_rerun(t):
    """Ctrl-C (SIGINT) or SIGTERM in the middle of a put: odcp dies of the
    signal (the shell's 128+N) after one line saying a rerun resumes; the
    rerun does, and sends less than the file."""
    t.login()
    EMU.seed_folder("/f")
    size = 6 * FRAG
    data = blob(size, 71)
    src = t.local("int.bin", data)
    # a shell's background job ignores SIGINT, and so would odcp started
    # from it (what a parent ignores stays ignored): handled here, exec
    # gives the child the default
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGINT, signal.SIGTERM):
        remote = "/f/int-%d.bin" % sig
        faults({"listener": "upload", "method": "PUT", "delay": 0.3, "times": 1000})
        EMU.clear_log()
        b = t.bg("put", *PUT_FRAG, src, remote)
        deadline = time.time() + 30
        while time.time() < deadline and len([x for x in frags(EMU.ctl("GET", "/log")) if x[3] == 202]) < 2:
            time.sleep(0.02)
        b.p.send_signal(sig)
        t.eq(b.finish(30), -sig, "how odcp ended after signal %d" % sig)
        t.eq(b.err_lines, ["odcp: interrupted; the same put or get run again resumes where this one stopped"],
             "what odcp said after signal %d" % sig)
        EMU.ctl("POST", "/faults/clear")
        EMU.clear_log()
        r = t.ok("put", *PUT_FRAG, src, remote, timeout=60)
        t.check("resuming the interrupted upload" in r.err, "no resume after signal %d: %r" % (sig, r.err))
        sent = sum(x["body_len"] for x in ups(EMU.log()) if x["method"] == "PUT")
        t.check(0 < sent < size, "the rerun after signal %d sent %d of %d bytes" % (sig, sent, size))
        uploaded_ok(t, remote, data, "after signal %d" % sig)


@test
def test_put_resume_after_expiry_pushed_on(t):
    """The session's first expiry is 2 s away, but each fragment pushes it
    on (to 15 min): the state file follows, so a rerun after the first
    expiry has passed still resumes instead of starting afresh."""
    t.login()
    EMU.seed_folder("/f")
    EMU.config(upload_session_lifetime=2)
    size = 6 * FRAG
    src = t.local("pushed.bin", blob(size, 91))
    faults({"listener": "upload", "method": "PUT", "nth": 1, "delay": 1.5},
           {"listener": "upload", "method": "PUT", "nth": 4, "status": 503, "times": 1000})
    EMU.clear_log()
    b = t.bg("--retries", "1", "put", *PUT_FRAG, src, "/f/pushed.bin")
    deadline = time.time() + 20
    while time.time() < deadline and not sessions_created(EMU.ctl("GET", "/log")):
        time.sleep(0.02)
    EMU.config(upload_session_lifetime=900)
    t.eq(b.finish(60), 1, "exit status of the run that breaks off (stderr %r)" % b.err_lines)
    created = sessions_created(EMU.log())
    t.eq(len(created), 1, "sessions created by the first run")
    time.sleep(max(0, created[0]["t"] + 2.5 - time.time()) if created else 0)
    EMU.ctl("POST", "/faults/clear")
    EMU.clear_log()
    r = t.ok("put", *PUT_FRAG, src, "/f/pushed.bin", timeout=60)
    t.check("resuming the interrupted upload" in r.err, "the rerun did not resume: %r" % r.err)
    t.eq(len(sessions_created(EMU.log())), 0, "sessions created by the rerun")
    uploaded_ok(t, "/f/pushed.bin", blob(size, 91), "resumed after the first expiry")


@test
def test_state_files_pruned(t):
    """put and get forget state no run can resume: this profile's upload
    sessions past their expiry and downloads whose partial file is gone;
    live ones, other profiles' and other files stay."""
    t.login()
    EMU.seed("/p.txt", b"p")
    state = os.path.join(t.cfg, "state")
    os.makedirs(state, exist_ok=True)
    now = int(time.time())
    files = {
        "default-put-00000000000000a1": "path=/a\nexpires=%d\nurl=https://x/up/1\n" % (now - 10),
        "default-put-00000000000000a2": "path=/b\nexpires=%d\nurl=https://x/up/2\n" % (now + 3600),
        "default-get-00000000000000a3": "remote=/c\nversion=1 x\npart=%s\n" % os.path.join(t.work, ".gone.odcp-part"),
        "default-get-00000000000000a4": "remote=/d\nversion=1 x\npart=%s\n" % t.local(".here.odcp-part", b"x"),
        "other-put-00000000000000a5": "path=/e\nexpires=%d\nurl=https://x/up/5\n" % (now - 10),
        "default-put-notahash": "expires=1\n",
    }
    for name, text in files.items():
        with open(os.path.join(state, name), "w") as f:
            f.write(text)
        os.chmod(os.path.join(state, name), 0o600)
    t.ok("get", "/p.txt", t.local("p.txt"))
    t.eq(sorted(os.listdir(state)), sorted(["default-put-00000000000000a2", "default-get-00000000000000a4",
                                            "other-put-00000000000000a5", "default-put-notahash"]),
         "state files after a get")


@test
def test_put_state_dir_secret_at_vv(t):
    """-vv shows headers but never the upload URL in full."""
    t.login()
    EMU.seed_folder("/f")
    data, r, log = put_big(t, 4 * FRAG, glob=("-vv",))
    t.check(len(r.err.splitlines()) > 10, "-vv printed little: %r" % r.err[:300])
    urls = {x["target"] for x in ups(log)}
    for u in urls:
        tok = u.rsplit("/", 1)[-1]
        t.check(tok not in r.err and tok not in r.text, "upload session id printed at -vv")


# ============================================================ downloads
def seed_big(size, path="/d/big.bin", seed=21):
    data = blob(size, seed)
    EMU.seed(path, data)
    return data


def dl_gets(log):
    return [x for x in log if x["listener"] == "download" and x["method"] == "GET"]


def get_broken(t, remote, out):
    """A get of remote into out that breaks off after 2 MiB and then meets
    only 503s: exit 1, the partial file kept.  Faults cleared after."""
    faults({"listener": "download", "nth": 1, "drop_response_after": 2 * MiB},
           {"listener": "download", "nth": 2, "status": 503, "times": 100})
    os.makedirs(os.path.dirname(out), exist_ok=True)
    r = t.status(1, "--retries", "1", "get", remote, out, timeout=60)
    EMU.ctl("POST", "/faults/clear")
    return r


@test
def test_get_connection_dropped_mid_body(t):
    """The download host sends 1 MiB and drops: resumed with Range in the
    same run, byte-identical, no partial file left."""
    t.login()
    data = seed_big(6 * MiB + 3)
    faults({"listener": "download", "nth": 1, "drop_response_after": MiB})
    EMU.clear_log()
    out = t.local("out/big.bin")
    os.makedirs(os.path.dirname(out))
    t.ok("get", "/d/big.bin", out, timeout=60)
    t.check(read(out) == data, "downloaded bytes differ")
    g = dl_gets(EMU.log())
    t.check(len(g) == 2 and g[1]["headers"].get("range", "").startswith("bytes=") and
            int(re.match(r"bytes=(\d+)-", g[1]["headers"].get("range", "bytes=0-")).group(1)) >= MiB - 65536,
            "want a second GET with Range from about 1 MiB: %r" % [(x["status"], x["headers"].get("range")) for x in g])
    t.eq(sorted(os.listdir(os.path.dirname(out))), ["big.bin"], "files beside the target")
    no_auth_on_preauth(t, EMU.log(), "dropped download")


@test
def test_get_stalled_body_times_out_and_resumes(t):
    """The download host sends 512 KiB and goes silent: --timeout 2 notices,
    the rest comes with Range."""
    t.login()
    data = seed_big(3 * MiB, seed=22)
    faults({"listener": "download", "nth": 1, "stall": 30, "stall_after_bytes": 512 * 1024})
    out = t.local("stall.bin")
    EMU.clear_log()
    t0 = time.time()
    t.ok("--timeout", "2", "get", "/d/big.bin", out, timeout=60)
    t.note("a 30 s stall after 512 KiB, --timeout 2: the get ended after %.1f s" % (time.time() - t0))
    t.check(time.time() - t0 < 25, "the stall was not noticed before the server gave up (%.1fs)" % (time.time() - t0))
    t.check(read(out) == data, "bytes differ after a stall")
    g = dl_gets(EMU.log())
    t.check(len(g) >= 2 and "range" in g[-1]["headers"], "no Range request after the stall: %r" % [x["headers"].get("range") for x in g])


def slow_listing(t, folder, rule, timeout):
    """ls of folder with rule on the first listing request: the attempt is
    given up within --timeout, the retry works (returns the seconds the ls
    took).  With rule on every attempt: exit 1 within the budget, an error
    that names the timeout, never a hang."""
    EMU.seed(folder + "/a.txt", b"a")
    faults(dict(rule, listener="graph", path="children", nth=1))
    t0 = time.time()
    r = t.ok("--timeout", str(timeout), "ls", folder, timeout=60)
    took = time.time() - t0
    t.eq(r.lines(), ["a.txt"], "listing after %r" % rule)
    t.check(took < 15, "%r held odcp for %.1f s" % (rule, took))
    EMU.ctl("POST", "/faults/clear")
    faults(dict(rule, listener="graph", path="children", times=100))
    t0 = time.time()
    r = t.status(1, "--timeout", str(timeout), "--retries", "1", "ls", folder, timeout=60)
    t.check(time.time() - t0 < 20, "gave up after %.1fs" % (time.time() - t0))
    t.check(re.search(r"time", r.err, re.I) is not None, "error does not name the timeout: %r" % r.err)
    return took


@test
def test_stalled_server_ls(t):
    """Graph accepts the request and says nothing: --timeout 2 gives up on
    that attempt, the retry works; every attempt stalled: exit 1."""
    t.login()
    slow_listing(t, "/s", {"stall": 30}, 2)


@test
def test_stalled_writes_and_sign_in_name_what(t):
    """Every attempt of a token refresh, or of starting an upload session,
    meets a stalled server: one line naming what was being done, the
    failure and the attempts; the token file as it was."""
    t.login()
    EMU.seed_folder("/f")
    before = token_snapshot(t)
    EMU.ctl("POST", "/expire_tokens")
    faults({"listener": "login", "path": "token", "stall": 30, "times": 100})
    r = t.status(1, "--timeout", "1", "--retries", "1", "ls", "/f", timeout=60)
    t.eq(r.err, "odcp: token request: localhost: timed out (2 attempts)\n", "a stalled token endpoint")
    t.eq(token_snapshot(t), before, "the token file after a stalled refresh")
    EMU.ctl("POST", "/faults/clear")
    faults({"listener": "graph", "method": "POST", "path": "createUploadSession", "stall": 30, "times": 100})
    data, r, log = put_big(t, 4 * FRAG, remote="/f/st.bin", want=1, glob=("--timeout", "1", "--retries", "1"))
    t.eq(r.err, "odcp: /f/st.bin: localhost: timed out (2 attempts)\n", "a stalled createUploadSession")
    t.eq(len(sessions_created(log)), 2, "sessions asked for")


@test
def test_trickled_head_times_out(t):
    """A server that sends its response head a byte every half second,
    never silent for a whole --timeout 2: the head must come whole within
    the timeout, so the attempt is given up after 2 s and the retry works;
    every attempt trickled: exit 1."""
    t.login()
    took = slow_listing(t, "/tr", {"trickle_head": 0.5}, 2)
    t.note("a head trickled at 2 bytes/s, --timeout 2: ls ended after %.1f s" % took)


@test
def test_get_200_instead_of_206(t):
    """A resumed download answered with 200 (the whole file) restarts the
    partial file cleanly: the result is the file, not prefix + file."""
    t.login()
    data = seed_big(3 * MiB, seed=23)
    faults({"listener": "download", "nth": 1, "drop_response_after": MiB},
           {"listener": "download", "nth": 2, "ignore_range": True})
    out = t.local("r200.bin")
    EMU.clear_log()
    t.ok("get", "/d/big.bin", out, timeout=60)
    t.check(read(out) == data, "bytes differ")
    g = dl_gets(EMU.log())
    t.eq([(x["status"], "range" in x["headers"]) for x in g], [(200, False), (200, True)], "download GETs (status, Range sent)")


@test
def test_get_improper_download_answers(t):
    """What a download host must not do: send more than the item's size
    (exit 1, nothing of that body kept), or answer a resume with another
    range than asked (exit 1, the partial file kept for a rerun, which
    resumes); a 416 to a resume starts the file again and it ends
    intact; the whole file (200) in answer to a resume into a pipe is an
    exit 1, as standard output cannot start again."""
    t.login()
    size = MiB
    data = seed_big(size, seed=61)
    d = t.local("imp")
    os.makedirs(d)
    out = os.path.join(d, "big.bin")
    faults({"listener": "download", "nth": 1, "status": 200, "body": "x" * (size + 5)})
    r = t.status(1, "get", "/d/big.bin", out)
    t.check("longer than" in r.err, "no 'longer than' in %r" % r.err)
    t.eq(os.listdir(d), [], "files after a download longer than announced")
    EMU.ctl("POST", "/faults/clear")
    faults({"listener": "download", "nth": 1, "drop_response_after": 256 * 1024},
           {"listener": "download", "nth": 2, "status": 206, "body": "0123456789",
            "headers": {"Content-Range": "bytes 0-9/%d" % size}})
    r = t.status(1, "get", "/d/big.bin", out)
    t.check("another range" in r.err and r.err.rstrip().endswith("run the same get again to resume"),
            "want 'another range' and the rerun hint: %r" % r.err)
    t.eq(os.listdir(d), [".big.bin.odcp-part"], "files after a resume answered with another range")
    EMU.ctl("POST", "/faults/clear")
    EMU.clear_log()
    t.ok("get", "/d/big.bin", out)
    t.check(read(out) == data, "bytes differ after the rerun")
    t.eq([x["headers"].get("range") for x in dl_gets(EMU.log())], ["bytes=262144-"], "the rerun's Range")
    os.unlink(out)
    faults({"listener": "download", "nth": 1, "drop_response_after": 256 * 1024},
           {"listener": "download", "nth": 2, "status": 416, "headers": {"Content-Range": "bytes */%d" % size}})
    EMU.clear_log()
    t.ok("get", "/d/big.bin", out)
    t.check(read(out) == data, "bytes differ after a 416 to the resume")
    t.eq([(x["status"], x["headers"].get("range")) for x in dl_gets(EMU.log())],
         [(200, None), (416, "bytes=262144-"), (200, None)], "download GETs (status, Range)")
    EMU.ctl("POST", "/faults/clear")
    faults({"listener": "download", "nth": 1, "drop_response_after": 256 * 1024},
           {"listener": "download", "nth": 2, "ignore_range": True})
    r = t.status(1, "get", "/d/big.bin", "-")
    t.check("pipe cannot start again" in r.err, "no 'pipe cannot start again' in %r" % r.err)
    t.eq(r.out, data[:256 * 1024], "standard output after the resume failed")


@test
def test_get_expired_download_url(t):
    """The pre-authenticated URL answers 403 (expired) on the resume: odcp
    asks Graph for a fresh one without renewing its token, and finishes."""
    t.login()
    data = seed_big(4 * MiB, seed=24)
    for status in (401, 403, 404):
        EMU.ctl("POST", "/faults/clear")
        faults({"listener": "download", "nth": 1, "drop_response_after": MiB},
               {"listener": "download", "nth": 2, "status": status})
        out = t.local("exp-%d.bin" % status)
        EMU.clear_log()
        t.ok("get", "/d/big.bin", out, timeout=60)
        t.check(read(out) == data, "%d: bytes differ" % status)
        log = EMU.log()
        t.eq(len(e2e.token_posts(log)), 0, "%d: token refreshes for an expired download URL" % status)
        c = [x for x in log if x["listener"] == "graph" and x["path"].endswith("/content")]
        t.eq(len(c), 2, "%d: GET .../content (fresh download URLs)" % status)


@test
def test_get_redirect_without_location(t):
    """A 302 from /content without a Location (seen once, 5.1) is retried;
    every answer so: exit 1 naming it, nothing under the target's name."""
    t.login()
    data = seed_big(MiB, "/d/noloc.bin", seed=27)
    out = t.local("noloc.bin")
    faults({"listener": "graph", "path": "content", "method": "GET", "nth": 1, "status": 302, "body": ""})
    EMU.clear_log()
    t.ok("get", "/d/noloc.bin", out)
    t.check(read(out) == data, "bytes after a 302 without a Location")
    t.eq([x["status"] for x in EMU.log() if x["listener"] == "graph" and x["path"].endswith("/content")], [302, 302],
         "answers from /content")
    os.unlink(out)
    EMU.ctl("POST", "/faults/clear")
    faults({"listener": "graph", "path": "content", "method": "GET", "status": 302, "body": "", "times": 100})
    r = t.status(1, "--retries", "2", "get", "/d/noloc.bin", out)
    t.eq(r.err.strip(), "odcp: /d/noloc.bin: HTTP 302 without a Location", "the error")
    t.eq(os.listdir(t.work), [], "files after 302s without a Location")


@test
def test_missing_hashes(t):
    """No quickXorHash (10.3: a missing hash is no error): get and put check
    the size only and say so at -v; a hash missing from the upload's answer
    is looked for once more with a GET of the item (7.6); only a sha1Hash
    is not taken for a quickXorHash."""
    t.login()
    data = seed_big(MiB + 7, "/h/a.bin", seed=61)
    src = t.local("up.bin", blob(100000, 62))
    big = t.local("upbig.bin", blob(4 * FRAG + 9, 63))
    try:
        for kind in ("", "sha1Hash"):
            EMU.config(hashes=kind)
            out = t.local("a-%s.bin" % kind)
            r = t.ok("-v", "get", "/h/a.bin", out)
            t.check(read(out) == data, "%r: bytes of the get" % kind)
            t.check("/h/a.bin: no quickXorHash from the service; size checked" in r.err,
                    "%r: get -v does not say the size only was checked: %r" % (kind, r.err))
            for f in (src, big):
                r = t.ok("-v", "put", *PUT_FRAG, f, "/h/%s-%s" % (kind, os.path.basename(f)))
                t.check("no quickXorHash from the service; size checked" in r.err,
                        "%r: put -v does not say the size only was checked: %r" % (kind, r.err))
        EMU.config(hashes="quickXorHash", hashes_late=True)
        # (a simple upload's PATCH of the mtime answers with the hash)
        for f, last in ((src, "PATCH"), (big, "GET")):
            EMU.clear_log()
            r = t.ok("-v", "put", *PUT_FRAG, f, "/h/late-%s" % os.path.basename(f))
            t.check("size checked" not in r.err, "a late hash not looked for: %r" % r.err)
            after = [x["method"] for x in EMU.log() if x["listener"] == "graph"][-1:]
            t.eq(after, [last], "the last request of a put answered without hashes")
            uploaded_ok(t, "/h/late-%s" % os.path.basename(f), read(f), "late hash")
    finally:
        EMU.config(hashes="quickXorHash", hashes_late=False)


@test
def test_get_resume_across_runs_and_verify(t):
    """A get that fails leaves .NAME.odcp-part and no target; the next get
    resumes with Range if the remote item is unchanged, restarts if it
    changed; a hash mismatch is an error that shows both values and never
    takes the target's name."""
    t.login()
    data = seed_big(5 * MiB, seed=25)
    out = t.local("res/big.bin")
    r = get_broken(t, "/d/big.bin", out)
    t.check("run the same get again" in r.err, "the error does not say a rerun resumes: %r" % r.err)
    t.check(not os.path.exists(out), "target exists after a failed get")
    parts = [f for f in os.listdir(os.path.dirname(out)) if f.endswith(".odcp-part")]
    t.eq(parts, [".big.bin.odcp-part"], "partial file")
    t.eq(os.stat(os.path.join(os.path.dirname(out), parts[0])).st_mode & 0o777 if parts else None, 0o600,
         "mode of the partial file")
    EMU.clear_log()
    t.ok("get", "/d/big.bin", out, timeout=60)
    t.check(read(out) == data, "bytes differ after resuming")
    g = dl_gets(EMU.log())
    m = re.match(r"bytes=(\d+)-", (g[0]["headers"].get("range") or "") if g else "")
    t.check(m is not None and int(m.group(1)) > 0, "second run did not resume with Range: %r" % [x["headers"].get("range") for x in g])
    t.eq(sorted(os.listdir(os.path.dirname(out))), ["big.bin"], "files after resuming")
    # changed remote: the partial file is not reused
    out2 = t.local("res/two.bin")
    EMU.seed("/d/two.bin", data)
    get_broken(t, "/d/two.bin", out2)
    new = blob(5 * MiB, 26)
    EMU.seed("/d/two.bin", new)
    EMU.clear_log()
    t.ok("get", "/d/two.bin", out2, timeout=60)
    t.check(read(out2) == new, "a changed remote file was spliced onto the old partial file")
    g = dl_gets(EMU.log())
    t.check(all("range" not in x["headers"] or x["headers"]["range"].startswith("bytes=0-") for x in g[:1]),
            "resumed a partial file of another version: %r" % [x["headers"].get("range") for x in g])


@test
def test_get_truncated_chunked_json(t):
    """A listing page and an item lookup whose chunked JSON is cut short are
    retried (GETs are idempotent); with every answer cut, exit 1."""
    t.login()
    for i in range(5):
        EMU.seed("/t/f%d.txt" % i, b"x" * i)
    faults({"listener": "graph", "path": "children", "nth": 1, "truncate_chunked": True})
    r = t.ok("ls", "/t")
    t.eq(r.lines(), ["f%d.txt" % i for i in range(5)], "listing after a truncated page")
    faults({"listener": "graph", "path": "f3", "nth": 1, "truncate_chunked": True})
    r = t.ok("stat", "/t/f3.txt")
    t.eq(kv_lines(r.text).get("size"), "3", "stat after a truncated answer")
    EMU.ctl("POST", "/faults/clear")
    faults({"listener": "graph", "path": "children", "truncate_chunked": True, "times": 100})
    r = t.status(1, "--retries", "2", "ls", "/t")


@test
def test_ls_503_http_date_retry_after(t):
    """503 on the second listing page with Retry-After as an HTTP-date 100 s
    after the response's Date, on a server whose clock is an hour ahead:
    odcp waits about 100 s (scaled: 1 s), not an hour, and lists all."""
    t.login()
    EMU.config(page_size=3)
    for i in range(7):
        EMU.seed("/p/n%d" % i, b"")
    rid, = faults({"listener": "graph", "path": "skiptoken", "nth": 1, "status": 503,
                   "retry_after_date": 100, "date_skew": 3600})
    EMU.clear_log()
    r = t.ok("ls", "/p", timeout=60)
    t.eq(r.lines(), ["n%d" % i for i in range(7)], "listing")
    g = gap_after([x for x in EMU.log() if x["listener"] == "graph"], rid)
    t.note("waited %.2f s after 503 with a Retry-After date 100 s past a Date 1 h ahead (scaled: %.2f s)"
           % (g or -1, 100 * SCALE))
    t.check(g is not None and 100 * SCALE * 0.9 <= g < 100 * SCALE + 20, "wait after an HTTP-date Retry-After: %r s" % g)


@test
def test_500_then_success_each_command(t):
    """500 once on the first Graph request of each command: all succeed."""
    t.login()
    EMU.seed("/m/a.txt", b"hello")
    cases = [("ls", "/m"), ("stat", "/m/a.txt"), ("get", "/m/a.txt", "-"), ("rm", "/m/a.txt"),
             ("mkdir", "/m/new"), ("whoami",)]
    for args in cases:
        EMU.ctl("POST", "/faults/clear")
        faults({"listener": "graph", "nth": 1, "status": 500})
        EMU.clear_log()
        r = t.run(*args)
        t.eq(r.rc, 0, "odcp %s after one 500 (stderr %r)" % (" ".join(args), r.err))
        g = [(x["method"], x["path"], x["status"]) for x in EMU.log() if x["listener"] == "graph"]
        if args[0] == "mkdir":      # not idempotent: read back, then decide
            t.eq([(m, st) for m, _, st in g[:3]], [("POST", 500), ("GET", 404), ("POST", 201)],
                 "odcp mkdir after a 500: read back, then made once")
        else:
            t.check(len(g) >= 2 and g[0][2] == 500 and g[1][:2] == g[0][:2] and 200 <= g[1][2] < 300,
                    "odcp %s: the request after a 500 is the same one, answered: %r" % (" ".join(args), g[:2]))
    tree = EMU.tree()
    t.check("/m/a.txt" not in tree and "/m/new" in tree, "rm/mkdir effects: %r" % sorted(tree))


MATRIX_FAULTS = [
    ("500 then success", {"status": 500}),
    ("503 with an HTTP-date Retry-After, server clock 1 h ahead", {"status": 503, "retry_after_date": 20, "date_skew": 3600}),
    ("429 with Retry-After in seconds", {"status": 429, "headers": {"Retry-After": "20"}}),
    ("truncated chunked JSON", {"truncate_chunked": True}),
    ("connection dropped after 40 body bytes", {"drop_response_after": 40}),
    ("answer lost", {"lose_response": True}),
    ("stalled server", {"stall": 30}),
]


@test
def test_matrix_read_commands(t):
    """Each fault above on the first Graph request of each read-only
    command: the command succeeds with the output of a clean run."""
    t.login()
    EMU.config(page_size=2)
    for i in range(5):
        EMU.seed("/mx/f%d.txt" % i, b"%d" % i * (i + 1))
    cmds = [("ls", "/mx"), ("ls", "-l", "/mx"), ("ls", "-R", "/"), ("stat", "/mx/f2.txt"), ("whoami",), ("df",),
            ("get", "/mx/f4.txt", "-")]
    want = {c: t.ok(*c).out for c in cmds}
    for name, rule in MATRIX_FAULTS:
        good = 0
        for c in cmds:
            EMU.ctl("POST", "/faults/clear")
            faults(dict(rule, listener="graph", nth=1))
            r = t.run("--timeout", "2", *c, timeout=60)
            ok = t.check(r.rc == 0 and r.out == want[c], "%s on odcp %s: rc %d, stdout %s, stderr %r"
                         % (name, " ".join(c), r.rc, "same" if r.out == want[c] else "differs: %r" % r.out[:200], r.err))
            fired = [x["fired"] for x in rules().values()]
            good += t.eq(fired, [1], "%s on odcp %s: the fault fired" % (name, " ".join(c))) and ok
        t.note("%s: %d of %d read commands (%s) exit 0 with a clean run's output"
               % (name, good, len(cmds), "; ".join(" ".join(c) for c in cmds)))


@test
def test_matrix_write_commands(t):
    """The same faults on the first write of mkdir, rm, a small put (its
    PUT, and the PATCH that sets its mtime) and a put -r: each ends done
    with exit 0; the request log shows the folder made and the file
    deleted once; no duplicate item; the mtime set; the token file as
    it was."""
    t.login()
    EMU.seed_folder("/w")
    t.local("src/a.txt", b"alpha", mtime=1500000000)
    t.local("src/sub/b.txt", b"beta")
    before = token_snapshot(t)

    def done(log, method, path):
        return len([x for x in log if x["listener"] == "graph" and x["method"] == method and
                    x["path"].endswith(path) and 200 <= x["status"] < 300])
    for n, (name, rule) in enumerate(MATRIX_FAULTS):
        EMU.ctl("POST", "/faults/clear")
        faults(dict(rule, listener="graph", method="POST", nth=1),
               dict(rule, listener="graph", method="DELETE", nth=1),
               dict(rule, listener="graph", method="PUT", nth=1),
               dict(rule, listener="graph", method="PATCH", nth=1))
        EMU.seed("/w/gone%d.txt" % n, b"x")
        steps = [("mkdir", "/w/d%d" % n), ("rm", "/w/gone%d.txt" % n),
                 ("put", t.local("src/a.txt"), "/w/a%d.txt" % n), ("put", "-r", t.local("src"), "/w/tree%d" % n)]
        good, logs = 0, []
        for c in steps:
            EMU.clear_log()
            r = t.run("--timeout", "2", *c, timeout=60)
            logs.append(EMU.log())
            good += t.check(r.rc == 0, "%s on odcp %s: rc %d, stderr %r" % (name, " ".join(c), r.rc, r.err))
        t.note("%s on the first write: %d of 4 (mkdir, rm, put, put -r) exit 0, none done twice" % (name, good))
        t.eq(done(logs[0], "POST", "/children"), 1, "%s: folders made by mkdir" % name)
        t.eq(done(logs[1], "DELETE", "gone%d.txt" % n), 1, "%s: deletes done by rm" % name)
        t.check(done(logs[2], "PATCH", "") >= 1, "%s: no PATCH of the mtime" % name)
        tree = EMU.tree()
        t.check("/w/d%d" % n in tree and "/w/gone%d.txt" % n not in tree, "%s: mkdir/rm effect" % name)
        for p, data in (("/w/a%d.txt" % n, b"alpha"), ("/w/tree%d/a.txt" % n, b"alpha"), ("/w/tree%d/sub/b.txt" % n, b"beta")):
            t.check(p in tree and EMU.file(p) == data, "%s: %s after put" % (name, p))
        t.eq(tree.get("/w/a%d.txt" % n, {}).get("mtime"), 1500000000, "%s: mtime after put" % name)
        t.eq(sorted(p for p in tree if p.startswith("/w/a%d" % n) or p.startswith("/w/d%d" % n)),
             ["/w/a%d.txt" % n, "/w/d%d" % n], "%s: no duplicates made" % name)
        t.eq(token_snapshot(t), before, "%s: the token file" % name)


@test
def test_get_corrupt_partial_fails_check(t):
    """A partial file whose bytes went bad on the local disk: the resumed
    get fails the quickXorHash check, shows both values, the bad file
    never takes the target's name, and the next get starts clean."""
    t.login()
    data = seed_big(5 * MiB, seed=28)
    out = t.local("cor/big.bin")
    get_broken(t, "/d/big.bin", out)
    part = os.path.join(os.path.dirname(out), ".big.bin.odcp-part")
    if not t.check(os.path.exists(part), "no partial file"):
        return
    with open(part, "r+b") as f:
        f.seek(1000)
        b = f.read(1)
        f.seek(1000)
        f.write(bytes([b[0] ^ 0xFF]))
    r = t.run("get", "/d/big.bin", out, timeout=60)
    t.eq((r.rc, len(r.err.splitlines())), (1, 2), "exit status and stderr lines (resuming, then the error): %r" % r.err)
    bad = bytearray(data)
    bad[1000] ^= 0xFF
    t.check(qxh(data) in r.err and qxh(bytes(bad)) in r.err and "quickXorHash" in r.err,
            "mismatch error does not show both hashes (%s, %s): %r" % (qxh(data), qxh(bytes(bad)), r.err))
    t.check(not os.path.exists(out), "the corrupt file took the target's name")
    t.ok("get", "/d/big.bin", out, timeout=60)
    t.check(read(out) == data, "bytes differ after starting clean")
    t.eq(sorted(os.listdir(os.path.dirname(out))), ["big.bin"], "files left")


@test
def test_mkdir_lost_answer_not_repeated_blindly(t):
    """The folder is made but the answer is lost: odcp reads it back, takes
    it as made, exits 0, and sends one POST."""
    t.login()
    EMU.seed_folder("/m")
    faults({"listener": "graph", "method": "POST", "path": "children", "nth": 1, "lose_response": True})
    EMU.clear_log()
    t.ok("mkdir", "/m/once")
    posts = [x for x in EMU.log() if x["method"] == "POST" and x["listener"] == "graph"]
    t.eq(len(posts), 1, "POSTs to create the folder")
    t.check("/m/once" in EMU.tree(), "folder missing")


@test
def test_session_answer_lost_both_ways(t):
    """The answer to createUploadSession is lost.  A session is invisible
    until its last byte, so nothing can be read back: odcp asks for a new
    one.  Both things the service has been seen to do (7.3): it opens a
    second session (the upload completes, the lost one lapses), or it
    refuses with 409 "An upload session already exists for this file"
    (exit 1, not 5, saying the rerun to make; the rerun, once that session
    has gone, completes)."""
    t.login()
    EMU.seed_folder("/f")
    size = 4 * FRAG
    rule = {"listener": "graph", "method": "POST", "path": "createUploadSession", "nth": 1, "lose_response": True}
    faults(rule)
    data, r, log = put_big(t, size, remote="/f/lost.bin")
    t.eq([x["status"] for x in sessions_created(log)], [200, 200], "sessions asked for, second session allowed")
    uploaded_ok(t, "/f/lost.bin", data, "second session allowed")
    EMU.ctl("POST", "/faults/clear")
    EMU.config(one_session_per_item=True, upload_session_lifetime=2)
    try:
        faults(rule)
        data, r, log = put_big(t, size, remote="/f/once.bin", want=1)
        EMU.config(upload_session_lifetime=900)
        t.eq([x["status"] for x in sessions_created(log)], [200, 409], "sessions asked for, second refused")
        t.check("An upload session already exists" in r.err and "run the same put again" in r.err,
                "the 409 and the way out not said: %r" % r.err)
        t.eq(len(r.err.splitlines()), 1, "lines said: %r" % r.err)
        t.check("/f/once.bin" not in EMU.tree(), "file committed")
        EMU.ctl("POST", "/faults/clear")
        time.sleep(2.5)             # the lost session lapses
        data, r, log = put_big(t, size, remote="/f/once.bin")
        uploaded_ok(t, "/f/once.bin", data, "the rerun after a refused second session")
    finally:
        EMU.config(one_session_per_item=False, upload_session_lifetime=900)


@test
def test_post_write_404_retried(t):
    """Right after mkdir, the new folder is briefly 404: a put into it retries
    that lookup; a 404 elsewhere is final at once (exit 4)."""
    t.login()
    faults({"listener": "graph", "method": "GET", "path": "fresh", "nth": 1, "status": 404, "times": 2})
    t.ok("mkdir", "/fresh")
    t.ok("put", t.local("x.txt", b"x"), "/fresh/x.txt")
    t.check("/fresh/x.txt" in EMU.tree(), "file missing")
    EMU.ctl("POST", "/faults/clear")
    EMU.clear_log()
    t.status(4, "stat", "/nope")
    t.eq(len([x for x in EMU.log() if x["listener"] == "graph"]), 1, "lookups of a missing item")
    # in one run: put -r makes /tree and /tree/sub, and the uploads into
    # them meet 404s (the new folder not yet visible): tried again, each
    # upload done
    t.local("src/a.txt", b"alpha")
    t.local("src/sub/b.txt", b"beta")
    faults({"listener": "graph", "method": "PUT", "path": "/tree/a.txt", "status": 404, "times": 2},
           {"listener": "graph", "method": "PUT", "path": "/tree/sub/b.txt", "status": 404, "times": 3})
    EMU.clear_log()
    t.ok("put", "-r", t.local("src"), "/tree")
    puts = [(x["path"].split(":")[1], x["status"]) for x in EMU.log() if x["listener"] == "graph" and x["method"] == "PUT"]
    t.eq(sorted(puts, key=lambda x: (x[0], x[1] != 404)), [("/tree/a.txt", 404), ("/tree/a.txt", 404), ("/tree/a.txt", 201),
                ("/tree/sub/b.txt", 404), ("/tree/sub/b.txt", 404), ("/tree/sub/b.txt", 404), ("/tree/sub/b.txt", 201)],
         "uploads into folders made in the run")
    t.eq((EMU.file("/tree/a.txt"), EMU.file("/tree/sub/b.txt")), (b"alpha", b"beta"), "files after 404s")
    # the same 404 into a folder this run did not make is final at once
    EMU.ctl("POST", "/faults/clear")
    faults({"listener": "graph", "method": "PUT", "path": "/tree/c.txt", "status": 404, "times": 5})
    EMU.clear_log()
    t.status(4, "put", t.local("c.txt", b"c"), "/tree/c.txt")
    t.eq(len([x for x in EMU.log() if x["listener"] == "graph" and x["method"] == "PUT"]), 1,
         "uploads tried into a folder not made in the run")


@test
def test_get_disk_full(t):
    """A file size limit (as a full disk) stops get with exit 1 naming the
    file; the target never appears; the token file is intact."""
    t.login()
    seed_big(2 * MiB, seed=27)
    before = token_snapshot(t)
    out = t.local("full/big.bin")
    os.makedirs(os.path.dirname(out))

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (MiB, MiB))

    argv = t.argv(["get", "/d/big.bin", out])
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=t.env(), timeout=60, preexec_fn=limit)
    err = p.stderr.decode()
    t.eq(p.returncode, 1, "exit status on a full disk (stderr %r)" % err)
    t.check(len(err.strip().splitlines()) == 1 and "big.bin" in err, "want one error line naming the file: %r" % err)
    t.check(not os.path.exists(out), "target exists after a write error")
    t.eq(token_snapshot(t), before, "token file after a write error")
    # /dev/full as standard output
    with open("/dev/full", "wb") as full:
        p = subprocess.run(t.argv(["get", "/d/big.bin", "-"]), stdout=full, stderr=subprocess.PIPE, env=t.env(), timeout=60)
    t.eq(p.returncode, 1, "exit status writing to /dev/full (stderr %r)" % p.stderr)
    # a read-only target folder
    ro = t.local("ro")
    os.makedirs(ro)
    os.chmod(ro, 0o500)
    # (root writes anyway; an immutable folder stops it, where chattr works)
    immutable = os.geteuid() == 0 and subprocess.run(["chattr", "+i", ro], stderr=subprocess.DEVNULL).returncode == 0
    if os.geteuid() != 0 or immutable:
        try:
            r = t.status(1, "get", "/d/big.bin", os.path.join(ro, "x.bin"))
        finally:
            if immutable:
                subprocess.run(["chattr", "-i", ro])
        t.check("x.bin" in r.err and re.search(r"Permission denied|Operation not permitted", r.err) is not None,
                "a read-only folder: %r" % r.err)
        t.eq(os.listdir(ro), [], "files in a read-only folder")
    else:
        t.note("root without chattr: the read-only folder case not run")


@test
def test_errors_name_the_item(t):
    """When the retries are spent, the one error line begins with the drive
    path worked on, then says what failed and which request; for a put
    whose session is kept, and a get whose partial file is kept, it says
    that a rerun resumes.  get -r names each file that failed."""
    t.login()
    EMU.seed("/n/a.txt", b"a")
    faults({"listener": "graph", "path": "children", "lose_response": True, "times": 100})
    r = t.status(1, "--retries", "1", "ls", "/n")
    t.check(r.err.startswith("odcp: /n: ") and "(GET to " in r.err and "2 attempts" in r.err,
            "ls: want '/n: ... (GET to HOST, 2 attempts)': %r" % r.err)
    EMU.ctl("POST", "/faults/clear")
    faults({"listener": "graph", "method": "POST", "status": 503, "times": 100})
    r = t.status(1, "--retries", "1", "mkdir", "/n/new")
    t.check(r.err.startswith("odcp: /n/new: HTTP 503 serviceNotAvailable: Injected fault"),
            "mkdir: want the path and the service's error, its code once: %r" % r.err)
    EMU.ctl("POST", "/faults/clear")
    EMU.seed_folder("/f")
    faults({"listener": "upload", "method": "PUT", "nth": 2, "lose_response": True},
           {"listener": "upload", "method": "GET", "lose_response": True, "times": 100})
    src = t.local("named.bin", blob(4 * FRAG, 71))
    r = t.status(1, "--retries", "1", "put", *PUT_FRAG, src, "/f/named.bin", timeout=60)
    t.check(r.err.startswith("odcp: /f/named.bin: ") and r.err.rstrip().endswith("run the same put again to resume"),
            "put: want the path first and the rerun hint last: %r" % r.err)
    t.check("/up/" not in r.err, "upload URL in the error: %r" % r.err)
    EMU.ctl("POST", "/faults/clear")
    r = t.ok("put", *PUT_FRAG, src, "/f/named.bin", timeout=60)
    t.check("resuming the interrupted upload" in r.err, "the rerun did not resume: %r" % r.err)
    uploaded_ok(t, "/f/named.bin", blob(4 * FRAG, 71), "after the named failure")
    for i in range(3):
        EMU.seed("/g/f%d.bin" % i, blob(300 * 1024, 80 + i))
    faults({"listener": "download", "drop_response_after": 10 * 1024, "times": 100})
    r = t.run("--retries", "1", "get", "-r", "/g", t.local("gout"), timeout=60)
    lines = r.err.strip().splitlines()
    t.eq(r.rc, 1, "get -r exit status when every file failed (stderr %r)" % r.err)
    t.eq(sorted(l.split(":")[1].strip() for l in lines), ["/g/f0.bin", "/g/f1.bin", "/g/f2.bin"],
         "files named by the error lines of get -r")
    t.check(all("run the same get again to resume" in l for l in lines), "get -r: no rerun hint: %r" % lines)


# ============================================================ sign-in and tokens
@test
def test_token_endpoint_errors_classified(t):
    """Transient token-endpoint errors are retried; invalid_grant exits 3
    naming the AADSTS code and suggesting login; invalid_client exits 2.
    The token file is untouched by the failures."""
    t.login()
    EMU.seed("/k.txt", b"k")
    EMU.ctl("POST", "/expire_tokens")
    faults({"listener": "login", "path": "token", "nth": 1, "status": 503, "headers": {"Retry-After": "50"}},
           {"listener": "login", "path": "token", "nth": 2, "status": 500})
    t.ok("stat", "/k.txt")
    EMU.ctl("POST", "/faults/clear")
    before = token_snapshot(t)
    EMU.ctl("POST", "/expire_tokens")
    faults({"listener": "login", "path": "token", "status": 400, "times": 10,
            "body": {"error": "invalid_grant", "error_description": "AADSTS70008: The provided authorization code or "
                     "refresh token has expired due to inactivity.", "error_codes": [70008]}})
    r = t.status(3, "stat", "/k.txt")
    t.check("AADSTS70008" in r.err and "login" in r.err, "invalid_grant: want the code and 'login' named: %r" % r.err)
    t.eq((r.err.count("AADSTS70008"), ".;" in r.err), (1, False), "AADSTS code shown once, no '.;': %r" % r.err)
    t.eq(token_snapshot(t), before, "token file after invalid_grant")
    EMU.ctl("POST", "/faults/clear")
    faults({"listener": "login", "path": "token", "status": 401, "times": 10,
            "body": {"error": "invalid_client", "error_description": "AADSTS7000218: The request body must contain the "
                     "following parameter: 'client_assertion' or 'client_secret'.", "error_codes": [7000218]}})
    r = t.status(2, "stat", "/k.txt")
    t.check("AADSTS7000218" in r.err and re.search(r"public client|registration", r.err, re.I) is not None,
            "invalid_client: want the code and what to fix: %r" % r.err)
    t.eq(token_snapshot(t), before, "token file after invalid_client")
    for err, code in (("interaction_required", 50076), ("consent_required", 65001)):
        EMU.ctl("POST", "/faults/clear")
        faults({"listener": "login", "path": "token", "status": 400, "times": 10,
                "body": {"error": err, "error_description": "AADSTS%d: Injected." % code, "error_codes": [code]}})
        r = t.status(3, "stat", "/k.txt")
        t.check("AADSTS%d" % code in r.err and "odcp login" in r.err, "%s: want the code and 'odcp login': %r" % (err, r.err))
        t.eq(token_snapshot(t), before, "token file after %s" % err)
    # temporarily_unavailable is transient whatever its status
    EMU.ctl("POST", "/faults/clear")
    faults({"listener": "login", "path": "token", "status": 400, "times": 2,
            "body": {"error": "temporarily_unavailable", "error_description": "AADSTS90033: busy.", "error_codes": [90033]}})
    EMU.clear_log()
    t.ok("stat", "/k.txt")
    t.eq([x["status"] for x in e2e.token_posts(EMU.log())], [400, 400, 200], "token endpoint statuses")
    # an answer that breaks off (chunked JSON cut short, or the connection
    # dropped in the body) is asked for again, as a lost one is
    for rule in ({"truncate_chunked": True}, {"drop_response_after": 20}):
        EMU.ctl("POST", "/faults/clear")
        EMU.ctl("POST", "/expire_tokens")
        faults(dict(rule, listener="login", path="token", nth=1))
        EMU.clear_log()
        r = t.ok("stat", "/k.txt")
        t.eq(len(e2e.token_posts(EMU.log())), 2, "token requests after %r" % rule)
        t.check(r.err == "", "a retried token request said %r" % r.err)


@test
def test_two_processes_refresh_once(t):
    """Two odcp started together with an expired access token under strict
    rotation: both succeed, one refresh, and the stored refresh token is the
    newest one (a third run still works)."""
    t.login()
    EMU.seed("/c.txt", b"c")
    EMU.config(strict_rotation=True)
    EMU.ctl("POST", "/expire_tokens")
    faults({"listener": "login", "path": "token", "nth": 1, "delay": 1.0})
    EMU.clear_log()
    a = t.bg("stat", "/c.txt")
    b = t.bg("stat", "/c.txt")
    ra, rb = a.finish(60), b.finish(60)
    t.eq((ra, rb), (0, 0), "exit statuses (stderr %r / %r)" % (a.err_lines, b.err_lines))
    t.eq(len(e2e.token_posts(EMU.log())), 1, "refreshes by two processes")
    EMU.ctl("POST", "/expire_tokens")
    t.ok("stat", "/c.txt")
    EMU.config(strict_rotation=False)
    # a holder that never lets go (stopped, say): the wait is said after
    # 2 s, and bounded by --timeout x (--retries + 2); the token untouched
    import fcntl
    before = token_snapshot(t)
    EMU.ctl("POST", "/expire_tokens")
    holder = subprocess.Popen([sys.executable, "-c",
                               "import fcntl, sys, time\n"
                               "f = open(sys.argv[1], 'a'); fcntl.lockf(f, fcntl.LOCK_EX)\n"
                               "print('locked', flush=True); time.sleep(60)",
                               os.path.join(t.cfg, ".default.lock")], stdout=subprocess.PIPE)
    try:
        holder.stdout.readline()
        t0 = time.time()
        r = t.run("--timeout", "1", "--retries", "1", "stat", "/c.txt", timeout=30)
        took = time.time() - t0
    finally:
        holder.kill()
        holder.wait()
    t.eq(r.rc, 1, "exit status while another process holds the token lock")
    t.eq(r.err.splitlines(), ["odcp: waiting for another odcp (pid %d) renewing the tokens of profile default" % holder.pid,
                              "odcp: %s: another odcp (pid %d) has held it for 3 s: given up"
                              % (os.path.join(t.cfg, ".default.lock"), holder.pid)], "what odcp said")
    t.check(2.5 < took < 10, "gave up on the lock after %.1f s" % took)
    t.eq(token_snapshot(t), before, "the token file after giving up on the lock")


# ============================================================ kill -9 and rerun
def kill_when(t, args, pred, what, timeout=120):
    b = t.bg(*args)
    deadline = time.time() + timeout
    while time.time() < deadline and b.p.poll() is None:
        if pred():
            b.p.send_signal(signal.SIGKILL)
            b.p.wait(10)
            return True
        time.sleep(0.05)
    t.check(False, "%s: odcp ended (rc %s) before it could be killed" % (what, b.p.poll()))
    return False


@test
def test_kill9_put_and_get_50mib_then_resume(t):
    """kill -9 in the middle of a 50 MiB put and of a 50 MiB get; the rerun
    finishes byte-identical and moves fewer bytes than the file."""
    t.login()
    EMU.seed_folder("/k")
    size = 50 * MiB
    data = blob(size, 31)
    src = t.local("fifty.bin", data)
    EMU.clear_log()
    # slow the upload host down so the kill lands mid-upload
    faults({"listener": "upload", "method": "PUT", "delay": 0.2, "times": 1000})

    def half_up():
        return sum(x["body_len"] for x in EMU.ctl("GET", "/log") if x["listener"] == "upload" and x["status"] == 202) >= 20 * MiB
    if kill_when(t, ("put", "--fragment-size", str(16 * UNIT), src, "/k/fifty.bin"), half_up, "put"):
        EMU.ctl("POST", "/faults/clear")
        EMU.clear_log()
        t.ok("put", "--fragment-size", str(16 * UNIT), src, "/k/fifty.bin", timeout=120)
        sent = sum(x["body_len"] for x in ups(EMU.log()) if x["method"] == "PUT")
        t.note("put of 50 MiB killed, rerun sent %d bytes (%.0f%% of the file)" % (sent, 100.0 * sent / size))
        t.check(0 < sent < size, "rerun of put sent %d bytes of %d" % (sent, size))
        t.eq(len(sessions_created(EMU.log())), 0, "sessions created by the rerun")
        uploaded_ok(t, "/k/fifty.bin", data, "put after kill -9")
    # get: kill once the partial file holds 20 MiB
    EMU.seed("/k/down.bin", data)
    out = t.local("down/fifty.bin")
    os.makedirs(os.path.dirname(out))
    part = os.path.join(os.path.dirname(out), ".fifty.bin.odcp-part")
    faults({"listener": "download", "delay": 0.0, "stall": 60, "stall_after_bytes": 24 * MiB})

    def half_down():
        return os.path.exists(part) and os.path.getsize(part) >= 20 * MiB
    if kill_when(t, ("get", "/k/down.bin", out), half_down, "get"):
        EMU.ctl("POST", "/faults/clear")
        have = os.path.getsize(part)
        t.check(not os.path.exists(out), "target exists after kill -9")
        EMU.clear_log()
        t.ok("get", "/k/down.bin", out, timeout=120)
        t.check(read(out) == data, "get after kill -9: bytes differ")
        g = dl_gets(EMU.log())
        m = re.match(r"bytes=(\d+)-", (g[0]["headers"].get("range") or "") if g else "")
        t.check(m is not None and 0 < int(m.group(1)) <= have,
                "rerun of get: want Range from the partial size (%d): %r" % (have, [x["headers"].get("range") for x in g]))
        if m:
            t.note("get of 50 MiB killed with %d bytes kept, rerun fetched %d bytes (%.0f%% of the file)"
                   % (have, size - int(m.group(1)), 100.0 * (size - int(m.group(1))) / size))


# ============================================================ state
@test
def test_one_odcp_per_transfer_and_unusable_state(t):
    """Two overlapping runs of the same put (or get) do not mix: the second
    stops at once with exit 1 and sends no fragment, the first completes.
    A get resumed under another spelling of the same target (./d/../d/f)
    finds its partial file.  A state file that cannot be used (a FIFO) or
    a state directory that cannot be written costs only the resume: said
    once, and the transfer completes."""
    t.login()
    EMU.seed_folder("/s")
    size = 6 * FRAG
    data = blob(size, 41)
    src = t.local("lock.bin", data)
    # the first put is slowed on the upload host; the second starts then
    faults({"listener": "upload", "method": "PUT", "delay": 0.3, "times": 1000})
    EMU.clear_log()
    b = t.bg("put", *PUT_FRAG, src, "/s/lock.bin")
    deadline = time.time() + 20
    while time.time() < deadline and not any(x["listener"] == "upload" for x in EMU.ctl("GET", "/log")):
        time.sleep(0.02)
    n0 = len(frags(EMU.ctl("GET", "/log")))
    r = t.status(1, "put", *PUT_FRAG, src, "/s/lock.bin", timeout=60)
    t.check("another odcp is uploading" in r.err, "second put: %r" % r.err)
    t.eq(b.finish(120), 0, "exit status of the first put (stderr %r)" % b.err_lines)
    log = EMU.log()
    t.eq(len(sessions_created(log)), 1, "sessions created by the two overlapping puts")
    t.eq(len(frags(log)), 6, "fragments sent by the two overlapping puts (%d when the second began)" % n0)
    uploaded_ok(t, "/s/lock.bin", data, "first of two overlapping puts")
    # OneDrive names are case-insensitive: /S/LOCK2.BIN is /s/lock2.bin
    EMU.clear_log()
    b = t.bg("put", *PUT_FRAG, src, "/s/lock2.bin")
    deadline = time.time() + 20
    while time.time() < deadline and not any(x["listener"] == "upload" for x in EMU.ctl("GET", "/log")):
        time.sleep(0.02)
    r = t.status(1, "put", *PUT_FRAG, src, "/S/LOCK2.BIN", timeout=60)
    t.check("another odcp is uploading" in r.err, "a put to the same item spelt otherwise: %r" % r.err)
    t.eq(b.finish(120), 0, "exit status of the first put (stderr %r)" % b.err_lines)
    t.eq(len(sessions_created(EMU.log())), 1, "sessions created by two puts to one item spelt two ways")
    EMU.ctl("POST", "/faults/clear")
    # something where the lock goes: the put stops rather than run unlocked
    state = os.path.join(t.cfg, "state")
    for f in os.listdir(state):
        if f.endswith(".lock"):
            os.unlink(os.path.join(state, f))
    EMU.clear_log()
    faults({"listener": "upload", "method": "PUT", "nth": 2, "status": 503, "times": 100})
    t.status(1, "--retries", "0", "put", *PUT_FRAG, src, "/s/lock4.bin", timeout=60)
    EMU.ctl("POST", "/faults/clear")
    puts = [f for f in os.listdir(state) if "-put-" in f and not f.endswith(".lock")]
    t.eq(len(puts), 1, "put state files after a broken put")
    for f in puts:
        os.mkdir(os.path.join(state, f + ".lock"))
    r = t.status(1, "put", *PUT_FRAG, src, "/s/lock4.bin", timeout=60)
    t.check("cannot be the lock of this upload" in r.err, "a directory where the lock goes: %r" % r.err)
    for f in puts:
        os.rmdir(os.path.join(state, f + ".lock"))
    t.ok("put", *PUT_FRAG, src, "/s/lock4.bin", timeout=60)
    uploaded_ok(t, "/s/lock4.bin", data, "after the lock's place was freed")
    # the same for get: the second stops, touching neither file
    big = seed_big(5 * MiB, "/s/down.bin", seed=42)
    out = t.local("dl/down.bin")
    os.makedirs(os.path.dirname(out))
    faults({"listener": "download", "stall": 3, "stall_after_bytes": MiB})
    b = t.bg("get", "/s/down.bin", out)
    part = os.path.join(os.path.dirname(out), ".down.bin.odcp-part")
    deadline = time.time() + 20
    while time.time() < deadline and not (os.path.exists(part) and os.path.getsize(part) >= MiB):
        time.sleep(0.02)
    r = t.status(1, "get", "/s/down.bin", out, timeout=60)
    t.check("another odcp is downloading" in r.err, "second get: %r" % r.err)
    t.eq(b.finish(120), 0, "exit status of the first get (stderr %r)" % b.err_lines)
    t.check(read(out) == big, "bytes of the first of two overlapping gets")
    t.eq(sorted(os.listdir(os.path.dirname(out))), ["down.bin"], "files after two overlapping gets")
    EMU.ctl("POST", "/faults/clear")
    # gets started together, over and over: whoever loses says so, and
    # never leaves a partial file that a later get refuses
    races = 0
    for n in range(8):
        os.unlink(out)
        faults({"listener": "download", "delay": 0.05 * (n % 3), "times": 2})
        bs = [t.bg("get", "/s/down.bin", out) for _ in range(3)]
        rcs = [b.finish(60) for b in bs]
        EMU.ctl("POST", "/faults/clear")
        races += rcs.count(1)
        r = t.run("get", "/s/down.bin", out)
        t.eq((r.rc, read(out) == big), (0, True), "a get after three together (%r, %r)" % (rcs, r.err))
        t.eq(sorted(os.listdir(os.path.dirname(out))), ["down.bin"], "files after three gets together")
    t.note("three gets started together, 8 times: %d lost the race and said so" % races)
    # a rerun under another spelling of the target resumes
    os.unlink(out)
    get_broken(t, "/s/down.bin", out)
    EMU.clear_log()
    r = t.ok("get", "/s/down.bin", "./dl/../dl/down.bin", cwd=t.work, timeout=60)
    t.check(read(out) == big, "bytes after resuming under another spelling")
    g = dl_gets(EMU.log())
    t.check(bool(g) and (g[0]["headers"].get("range") or "").startswith("bytes=") and
            not g[0]["headers"]["range"].startswith("bytes=0-"),
            "no resume under another spelling: %r" % [x["headers"].get("range") for x in g])
    # a FIFO where the state file would be: said, not hung on, completed
    state = os.path.join(t.cfg, "state")
    os.unlink(out)
    get_broken(t, "/s/down.bin", out)
    gets = [f for f in os.listdir(state) if "-get-" in f]
    t.eq(len(gets), 1, "get state files after a broken get")
    for f in gets:
        os.unlink(os.path.join(state, f))
        os.mkfifo(os.path.join(state, f), 0o600)
    # the partial file can no longer be proved odcp's: left alone
    part = os.path.join(os.path.dirname(out), ".down.bin.odcp-part")
    kept = read(part)
    r = t.status(1, "get", "/s/down.bin", out, timeout=60)
    t.check("in the way of the partial download, and not odcp's as far as the state file can tell" in r.err,
            "an unusable state file and the partial file in the way not said: %r" % r.err)
    t.check(read(part) == kept and not os.path.exists(out), "the partial file was touched, or the target made")
    os.unlink(part)
    r = t.ok("get", "/s/down.bin", out, timeout=60)
    t.check("not a state file" in r.err, "an unusable state file not said: %r" % r.err)
    t.check(read(out) == big, "bytes after an unusable state file")
    for f in gets:
        t.check(os.path.exists(os.path.join(state, f)), "the unusable state file was removed")
        os.unlink(os.path.join(state, f))
    # a state directory that cannot be written: the put is not resumable,
    # says so once, and completes
    if os.geteuid() != 0:
        os.chmod(state, 0o500)
        r = t.ok("put", *PUT_FRAG, src, "/s/nostate.bin", timeout=60)
        os.chmod(state, 0o700)
        t.eq(len(re.findall("cannot save the state", r.err)), 1, "warnings for a read-only state dir: %r" % r.err)
        uploaded_ok(t, "/s/nostate.bin", data, "put with a read-only state dir")
    else:
        # root writes anyway: a state dir that is a file stands in
        os.rename(state, state + ".away")
        with open(state, "w") as f:
            f.write("x")
        r = t.ok("put", *PUT_FRAG, src, "/s/nostate.bin", timeout=60)
        os.unlink(state)
        os.rename(state + ".away", state)
        t.eq(len(re.findall("cannot read the state of this transfer, so it will not be resumable: Not a directory",
                            r.err)), 1, "warnings for an unusable state dir: %r" % r.err)
        t.eq(len(r.err.splitlines()), 1, "lines said for an unusable state dir: %r" % r.err)
        uploaded_ok(t, "/s/nostate.bin", data, "put with an unusable state dir")


# ============================================================ hostile input
@test
def test_hostile_local_files(t):
    """What a hostile local setting must not make get do: write through a
    symbolic link another user planted in a sticky directory, or through
    a dangling one (cp refuses both); append to a file hard-linked to the
    partial file's name; use or clobber a file of the partial file's name
    that odcp did not make (one get -r itself downloaded).  Names near
    the 255-byte limit still download.  A FIFO as the token or config
    file does not hang odcp."""
    t.login()
    data = seed_big(3 * MiB, "/x/big.bin", seed=81)
    mine = b"my own notes\n"
    # a symbolic link of another user in a sticky, world-writable folder
    if os.geteuid() == 0:
        sticky = t.local("sticky")
        os.makedirs(sticky)
        os.chmod(sticky, 0o1777)
        secret = t.local("secret.txt", mine)
        link = os.path.join(sticky, "out.bin")
        os.symlink(secret, link)
        os.lchown(link, 65534, 65534)
        r = t.status(1, "get", "/x/big.bin", link)
        t.check("a symbolic link of another user in a sticky directory" in r.err, "planted link: %r" % r.err)
        t.eq(read(secret), mine, "the file a planted link names")
        # a link to a folder where get -r makes one: cp -r does not go in
        EMU.seed("/conf/victim.conf", b"from the service")
        victim = t.local("victim")
        os.makedirs(victim)
        t.local("victim/victim.conf", mine)
        os.symlink(victim, os.path.join(sticky, "conf"))
        os.lchown(os.path.join(sticky, "conf"), 65534, 65534)
        r = t.status(1, "get", "-r", "/conf", os.path.join(sticky, "conf"))
        t.check("a symbolic link of another user in a sticky directory" in r.err, "planted folder link: %r" % r.err)
        os.unlink(os.path.join(sticky, "conf"))
        os.makedirs(os.path.join(sticky, "top"))
        EMU.seed("/top/conf/victim.conf", b"from the service")
        os.symlink(victim, os.path.join(sticky, "top", "conf"))
        r = t.run("get", "-r", "/top", sticky)
        t.check(r.rc in (1, 6) and "a symbolic link where a folder goes: not gone into" in r.err,
                "a link inside the tree: %r" % r.err)
        t.eq(read(os.path.join(victim, "victim.conf")), mine, "the file behind a folder link")
    else:
        t.note("not root: the planted-link case needs another user's link; not run")
    dangling = t.local("dangling.bin")
    os.symlink(t.local("nowhere/x.bin"), dangling)
    r = t.status(1, "get", "/x/big.bin", dangling)
    t.check("not writing through a dangling symbolic link" in r.err, "dangling link: %r" % r.err)
    t.check(not os.path.exists(t.local("nowhere")), "a dangling link was written through")
    # a hard link to another file under the partial file's name
    out = t.local("hl/big.bin")
    get_broken(t, "/x/big.bin", out)
    part = os.path.join(os.path.dirname(out), ".big.bin.odcp-part")
    notes = t.local("hl/notes.txt", mine)
    os.unlink(part)
    os.link(notes, part)
    t.ok("get", "/x/big.bin", out, timeout=60)
    t.eq(read(notes), mine, "a file hard-linked to the partial file's name")
    t.check(read(out) == data, "bytes after a hard-linked partial file")
    # a file of the partial file's name that odcp did not make
    EMU.seed("/c/.a.bin.odcp-part", b"not a partial file")
    EMU.seed("/c/a.bin", b"a")
    down = t.local("c-down")
    r = t.run("get", "-r", "/c", down)
    got = {f: read(os.path.join(down, f)) for f in os.listdir(down)}
    if r.rc == 0:       # a.bin came first: its partial file was gone before the other came
        t.eq(got, {".a.bin.odcp-part": b"not a partial file", "a.bin": b"a"}, "get -r of a name like a partial file's")
    else:               # the other came first: a.bin fails, saying why, and nothing is lost
        t.eq((r.rc, got), (6, {".a.bin.odcp-part": b"not a partial file"}), "get -r of a name like a partial file's")
        t.check("in the way of the partial download, and not odcp's" in r.err, "a file in the way: %r" % r.err)
    t.ok("get", "/c/.a.bin.odcp-part", down)
    r = t.status(1, "get", "/c/a.bin", os.path.join(down, "a.bin"))
    t.check("in the way of the partial download, and not odcp's" in r.err, "a file in the way: %r" % r.err)
    t.eq(read(os.path.join(down, ".a.bin.odcp-part")), b"not a partial file", "the file in the way")
    # a name of 250 bytes: its partial file's name is shortened
    long_name = "n" * 250
    EMU.seed("/x/" + long_name, data[:MiB])
    os.makedirs(t.local("long"))
    t.ok("get", "/x/" + long_name, t.local("long/"))
    t.check(read(t.local("long/" + long_name)) == data[:MiB], "bytes of a file with a 250-byte name")
    t.eq(os.listdir(t.local("long")), [long_name], "files after getting a 250-byte name")
    # long multibyte names, two sharing their first 200 bytes, both broken
    # off and resumed: partial names of whole characters that differ
    names = ["\u65e5" * 83 + "a", "\u65e5" * 83 + "b"]
    for i, nm in enumerate(names):
        EMU.seed("/u8/" + nm, data[:2 * MiB + 1000 * i + 1])
    os.makedirs(t.local("u8"))
    for i, nm in enumerate(names):
        get_broken(t, "/u8/" + nm, t.local("u8/" + nm))
    parts = sorted(os.listdir(t.local("u8")))
    t.eq(len(parts), 2, "partial files of two long names: %r" % parts)
    for f in parts:
        f.encode("utf-8")           # a half character would not decode from the file system
        t.check(len(f.encode()) <= 255 and f.endswith(".odcp-part"), "partial name %r" % f)
    for i, nm in enumerate(names):
        r = t.ok("get", "/u8/" + nm, t.local("u8/" + nm))
        t.check("resuming the interrupted download" in r.err, "no resume for a long name: %r" % r.err)
        t.check(read(t.local("u8/" + nm)) == data[:2 * MiB + 1000 * i + 1], "bytes of a long multibyte name")
    # FIFOs as the token file and the config file
    tok = t.token_path()
    saved = read(tok)
    os.unlink(tok)
    os.mkfifo(tok, 0o600)
    t0 = time.time()
    r = t.status(1, "ls", "/", timeout=20)
    t.check(time.time() - t0 < 10 and "not a regular file" in r.err, "a FIFO token file: %r" % r.err)
    os.unlink(tok)
    with open(tok, "wb") as f:
        f.write(saved)
    os.chmod(tok, 0o600)
    cfg = os.path.join(t.cfg, "config")
    text = read(cfg)
    os.unlink(cfg)
    os.mkfifo(cfg, 0o600)
    r = t.status(2, "ls", "/", timeout=20)
    t.check("not a regular file" in r.err, "a FIFO config file: %r" % r.err)
    os.unlink(cfg)
    with open(cfg, "wb") as f:
        f.write(text)


@test
def test_hostile_service_answers(t):
    """What a hostile or broken service must not make odcp do: take a
    file as committed before its last byte; take a malformed quickXorHash
    as no hash (and so skip the check); read an answer without end; send
    a fragment again and again for a session that moves on a byte at a
    time; retry after a Retry-After too large to count; print a user:
    password from a URL it was sent to."""
    t.login()
    EMU.seed_folder("/f")
    size = 4 * FRAG
    # 201 with an item to the first of four fragments
    faults({"listener": "upload", "method": "PUT", "nth": 1, "status": 201,
            "body": {"id": "X", "name": "early.bin", "size": size, "file": {"hashes": {}}}})
    data, r, log = put_big(t, size, remote="/f/early.bin", want=1)
    t.check("took the file as whole at byte %d of %d" % (FRAG, size) in r.err, "an early commit: %r" % r.err)
    t.check("/f/early.bin" not in EMU.tree(), "an early commit left a file")
    EMU.ctl("POST", "/faults/clear")
    # a malformed hash: refused, the old target kept
    data2 = seed_big(MiB, "/f/bad.bin", seed=82)
    item = {"id": "Y", "name": "bad.bin", "size": MiB, "eTag": "e", "cTag": "c",
            "file": {"hashes": {"quickXorHash": "not-a-hash"}}}
    out = t.local("bad.bin", b"old")
    faults({"listener": "graph", "method": "GET", "path": "/f/bad.bin", "status": 200, "body": item, "times": 10})
    r = t.status(1, "get", "/f/bad.bin", out)
    t.check("improper quickXorHash" in r.err, "a malformed hash: %r" % r.err)
    t.eq(read(out), b"old", "the target after a malformed hash")
    EMU.ctl("POST", "/faults/clear")
    # an answer without end
    EMU.seed("/e/a.txt", b"a")
    faults({"listener": "graph", "path": "children", "endless_body": 60})
    t0 = time.time()
    r = t.status(1, "--timeout", "5", "ls", "/e", timeout=60)
    t.check(time.time() - t0 < 30 and "an answer longer than 16 MiB" in r.err, "an endless answer: %.1f s, %r"
            % (time.time() - t0, r.err))
    t.eq(len([x for x in EMU.log() if x["listener"] == "graph" and "children" in x["path"]]), 1,
         "an endless answer asked for again")
    EMU.ctl("POST", "/faults/clear")
    # a session that takes each fragment but moves on by one byte
    faults({"listener": "upload", "method": "PUT", "times": 1000, "next_expected_ranges": ["1-"]})
    data, r, log = put_big(t, size, remote="/f/crawl.bin", want=1, glob=("--retries", "2"))
    sent = sum(x["body_len"] for x in ups(log) if x["method"] == "PUT")
    t.note("a session moving on a byte per fragment, --retries 2: %d bytes sent for a file of %d" % (sent, size))
    t.check(sent <= 4 * FRAG, "bytes sent to a session that crawls: %d" % sent)
    EMU.ctl("POST", "/faults/clear")
    # a Retry-After past 64 bits is too long, not absent
    faults({"listener": "graph", "path": "children", "status": 503, "headers": {"Retry-After": "99999999999999999999"},
            "times": 10})
    EMU.clear_log()
    r = t.status(1, "ls", "/e")
    t.eq(len([x for x in EMU.log() if x["listener"] == "graph" and "children" in x["path"]]), 1,
         "requests after an endless Retry-After")
    EMU.ctl("POST", "/faults/clear")
    # user:password in a Location
    faults({"listener": "graph", "path": "content", "method": "GET", "status": 302,
            "headers": {"Location": "https://user:hunter2@localhost:1/x?tempauth=s"}, "times": 10})
    r = t.run("-vv", "get", "/e/a.txt", "-")
    t.eq(r.rc, 1, "exit status after a Location with a user:password")
    t.check("hunter2" not in r.err and "tempauth" not in r.err and r.err.endswith("bad host in a URL\n"),
            "a secret from a Location shown: %r" % r.err)


# ============================================================ proxies
@test
def test_proxy_with_credentials_and_no_proxy(t):
    """--proxy with user:password: every connection is a CONNECT with Basic
    credentials; no_proxy for the login host sends that one direct."""
    t.login()
    EMU.seed("/px.txt", b"proxied")
    EMU.config(proxy_auth="u:p@ss")
    proxy = EMU.urls["proxy"].replace("http://", "http://u:p%40ss@")
    EMU.ctl("POST", "/log/clear")
    r = t.ok("--proxy", proxy, "get", "/px.txt", "-", env={"https_proxy": ""})
    t.eq(r.out, b"proxied", "bytes through the proxy")
    full = EMU.ctl("GET", "/log")
    con = [x for x in full if x["listener"] == "proxy"]
    t.check(len(con) >= 2 and all(x["proxy_auth_valid"] for x in con), "CONNECTs without valid credentials: %r" % con)
    t.check("p@ss" not in r.err and "u:p" not in r.err, "proxy password printed")
    r = t.status(2, "--proxy", EMU.urls["proxy"], "ls", "/", env={"https_proxy": ""})
    t.check("407" in r.err or "proxy" in r.err.lower(), "407 not reported as a proxy problem: %r" % r.err)
    EMU.config(proxy_auth="")
    if not e2e.PUBLIC:
        EMU.ctl("POST", "/log/clear")
        host = "localhost"
        t.ok("ls", "/", env={"https_proxy": EMU.urls["proxy"], "no_proxy": host})
        t.eq([x for x in EMU.ctl("GET", "/log") if x["listener"] == "proxy"], [], "CONNECTs despite no_proxy")
        # the upper-case names, when the lower-case ones are not set
        EMU.ctl("POST", "/log/clear")
        t.ok("ls", "/", env={"https_proxy": None, "no_proxy": None, "HTTPS_PROXY": EMU.urls["proxy"]})
        t.check(len([x for x in EMU.ctl("GET", "/log") if x["listener"] == "proxy"]) >= 1, "no CONNECT with HTTPS_PROXY")
        EMU.ctl("POST", "/log/clear")
        t.ok("ls", "/", env={"https_proxy": None, "no_proxy": None, "HTTPS_PROXY": EMU.urls["proxy"],
                             "NO_PROXY": "example.com, .localhost,localhost"})
        t.eq([x for x in EMU.ctl("GET", "/log") if x["listener"] == "proxy"], [], "CONNECTs despite NO_PROXY")
    # a proxy that refuses connections: retried (a refused connection is
    # transient), then one line naming the proxy and the attempts
    import socket
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        dead = sk.getsockname()[1]
    r = t.status(1, "--retries", "2", "--proxy", "http://127.0.0.1:%d" % dead, "ls", "/", env={"https_proxy": ""})
    t.check(re.fullmatch(r"odcp: /: connect to proxy 127\.0\.0\.1 port %d: Connection refused \(GET to \S+, 3 attempts\)\n"
                         % dead, r.err) is not None, "a refused proxy: %r" % r.err)
    r = t.status(2, "ls", "/", env={"https_proxy": "socks5://127.0.0.1:1080"})
    t.eq(r.err, "odcp: https_proxy: only http:// proxies are supported (not TLS to the proxy, nor SOCKS)\n",
         "a SOCKS proxy")


# ------------------------------------------------------------ main
if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    sys.exit(e2e.main(TESTS, "faults-valgrind" if "valgrind" in e2e.ODCP else "faults", "tests/faults.py"))
