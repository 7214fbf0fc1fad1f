#!/usr/bin/env python3
"""Self-test for tests/fakegraph.py (python3 stdlib + openssl CLI).

    python3 tests/fakegraph_selftest.py [--big]     (--big adds a 200 MiB session upload)

Starts the emulator in a temporary directory, exercises every endpoint over
real TLS connections and checks the quickXorHash vectors of graph-api.md 10.2.
"""
import base64, email.utils, hashlib, http.client, json, os, re, secrets, shutil, signal, socket, ssl
import subprocess, sys, tempfile, threading, time, urllib.error, urllib.parse, urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fakegraph  # noqa: E402

FAILS = []
COUNT = [0]


def check(cond, what):
    COUNT[0] += 1
    if not cond:
        FAILS.append(what)
        print("FAIL:", what)
    return cond


# ------------------------------------------------------------------ quickXorHash
def test_qxh():
    vec = [(b"", "AAAAAAAAAAAAAAAAAAAAAAAAAAA="), (b"a", "YQAAAAAAAAAAAAAAAQAAAAAAAAA="),
           (b"abc", "YRDDGAAAAAAAAAAAAwAAAAAAAAA="), (b"Hello world", "SCgDG9jwBhDc4Q1yawMZAAAAAAA="),
           (b"The quick brown fox jumps over the lazy dog", "bMSlbysmxJL6S75XwfMcQZOpcr4="),
           (bytes(64), "AAAAAAAAAAAAAAAAQAAAAAAAAAA="), (bytes(range(256)), "QkGEfSisZcA7k+FCh71r2dbCayY="),
           (bytes(i % 256 for i in range(1048576)), "QkGEfSisZcA7k+FCh7x72dbCayY="),
           (bytes(20000000), "AAAAAAAAAAAAAAAAAC0xAQAAAAA="), (b"\x4a", "SgAAAAAAAAAAAAAAAQAAAAAAAAA="),
           (b"\xb5\xb4", "taAFAAAAAAAAAAAAAgAAAAAAAAA="),
           (base64.b64decode("2fuxhBJXtpWFe8dOfdGeHw=="), "O9tHLAghgSvYohKFyMMxnNCHaHg=")]
    for data, want in vec:
        h = fakegraph.QuickXorHash()
        h.update(data)
        check(h.b64() == want, "qxh whole len=%d" % len(data))
        if len(data) <= 1048576:
            for step in (1, 7, 159, 161, 4096):
                if len(data) > 5000 and step < 159:
                    continue
                h = fakegraph.QuickXorHash()
                for i in range(0, len(data), step):
                    h.update(data[i:i + step])
                check(h.b64() == want, "qxh pieces len=%d step=%d" % (len(data), step))


def qxh(data):
    h = fakegraph.QuickXorHash()
    h.update(data)
    return h.b64()


# ------------------------------------------------------------------ client helpers
class Client:
    def __init__(self, ep):
        self.ep = ep
        self.ctx = ssl.create_default_context(cafile=ep["ca"])
        self.ctx.maximum_version = ssl.TLSVersion.TLSv1_2     # what BearSSL speaks
        self.conns = {}
        self.token = None

    def conn(self, hostport):
        c = self.conns.get(hostport)
        if c is None:
            host, port = hostport.split(":")
            c = self.conns[hostport] = http.client.HTTPSConnection(host, int(port), context=self.ctx, timeout=60)
        return c

    def req(self, method, url, body=None, headers=None, auth=True):
        u = urllib.parse.urlsplit(url)
        h = dict(headers or {})
        if auth and self.token and u.netloc == urllib.parse.urlsplit(self.ep["graph_url"]).netloc:
            h["Authorization"] = "Bearer " + self.token
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        target = u.path + ("?" + u.query if u.query else "")
        for attempt in (1, 2):
            c = self.conn(u.netloc)
            try:
                c.request(method, target, body=body, headers=h)
                r = c.getresponse()
                data = r.read()
                break
            except (ConnectionError, http.client.RemoteDisconnected, ssl.SSLError):
                c.close()
                self.conns.pop(u.netloc, None)
                if attempt == 2:
                    raise
        if r.getheader("Connection", "").lower() == "close":
            c.close()
            self.conns.pop(u.netloc, None)
        return r.status, r, data

    def json(self, method, url, body=None, headers=None, auth=True):
        st, r, data = self.req(method, url, body, headers, auth)
        try:
            return st, r, json.loads(data) if data else None
        except ValueError:
            return st, r, data

    def form(self, path, **fields):
        body = urllib.parse.urlencode(fields).encode()
        return self.json("POST", self.ep["login_url"] + path, body, {"Content-Type": "application/x-www-form-urlencoded"})

    def g(self, path):
        return self.ep["graph_url"] + path


def control(ep, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    r = urllib.request.urlopen(urllib.request.Request(ep["control"] + path, data=data, method=method), timeout=30)
    raw = r.read()
    return raw if path.startswith("/file") else json.loads(raw)


def raw_request(ep, url, line):
    """Send a hand-made request line (http.client refuses raw spaces)."""
    u = urllib.parse.urlsplit(url)
    ctx = ssl.create_default_context(cafile=ep["ca"])
    with socket.create_connection((u.hostname, u.port), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname=u.hostname) as t:
            t.sendall(line + b"\r\nHost: localhost\r\n\r\n")
            return t.recv(4096)


# ------------------------------------------------------------------ tests
def test_tls(ep):
    port = urllib.parse.urlsplit(ep["graph_url"]).port
    if shutil.which("openssl"):
        p = subprocess.run(["openssl", "s_client", "-tls1_2", "-connect", "127.0.0.1:%d" % port, "-servername", "localhost",
                            "-CAfile", ep["ca"], "-verify_return_error"], input=b"", capture_output=True, timeout=20)
        out = p.stdout.decode(errors="replace")
        check("Protocol  : TLSv1.2" in out and "Verify return code: 0 (ok)" in out and "GCM" in out, "openssl s_client -tls1_2")


def device_login(c, ep, scope="Files.ReadWrite offline_access"):
    st, _, d = c.form("/common/oauth2/v2.0/devicecode", client_id="cid", scope=scope)
    check(st == 200 and d["verification_uri"] == ep["login_url"] + "/devicelogin" and d["expires_in"] == 900, "devicecode")
    check(d["user_code"] in d["message"] and isinstance(d["interval"], int), "devicecode message/interval")
    return d


def poll(c, d, client_id="cid"):
    return c.form("/common/oauth2/v2.0/token", grant_type="urn:ietf:params:oauth:grant-type:device_code",
                  client_id=client_id, device_code=d["device_code"])


def test_identity(c, ep):
    st, r, _ = c.req("GET", ep["login_url"] + "/devicelogin")
    check(st == 200, "devicelogin page")
    st, _, body = c.req("GET", ep["login_url"] + "/devicelogin?code=NOSUCH")
    check(st == 404 and b"no pending sign-in has the code NOSUCH" in body, "devicelogin with an unknown code")
    st, _, e = c.json("POST", ep["login_url"] + "/common/oauth2/v2.0/token", {"grant_type": "refresh_token", "client_id": "x"})
    check(st == 400 and e["error_codes"] == [900144], "JSON body to token endpoint is not read")
    control(ep, "POST", "/config", {"interval": 1})
    d = device_login(c, ep)
    st, r, e = poll(c, d)
    check(st == 400 and e["error"] == "authorization_pending" and e["error_codes"] == [70016], "pending")
    check(e["error_description"].startswith("AADSTS70016:") and "\r\nTrace ID: " in e["error_description"]
          and "correlation_id" in e and "trace_id" in e and "timestamp" in e, "AAD error shape")
    check(r.getheader("Content-Length") is not None, "token endpoint Content-Length")
    st, _, e = poll(c, d)
    check(e["error"] == "slow_down", "slow_down on fast poll")
    st, _, e = poll(c, d)
    check(e["error"] == "authorization_pending", "slow_down only once")
    check(any(x["user_code"] == d["user_code"] and x["state"] == "pending" for x in control(ep, "GET", "/devicecodes")), "devicecodes list")
    control(ep, "POST", "/approve", {"user_code": d["user_code"]})
    st, _, t = poll(c, d)
    check(st == 200 and t["token_type"] == "Bearer" and t["expires_in"] == 3599 and t["refresh_token"] and t["access_token"]
          and t["access_token"].count(".") < 2, "device token")
    st, _, e = poll(c, d)
    check(st == 400 and e["error"] == "invalid_grant", "redeemed device code")
    st, _, e = c.form("/common/oauth2/v2.0/token", grant_type="urn:ietf:params:oauth:grant-type:device_code",
                      client_id="cid", device_code="nope")
    check(e["error"] == "bad_verification_code", "bad_verification_code")
    d2 = device_login(c, ep)
    control(ep, "POST", "/deny", {"user_code": d2["user_code"]})
    check(poll(c, d2)[2]["error"] == "authorization_declined", "declined")
    control(ep, "POST", "/config", {"device_expires_in": 1})
    d3 = c.form("/common/oauth2/v2.0/devicecode", client_id="cid", scope="Files.ReadWrite")[2]
    time.sleep(1.2)
    check(poll(c, d3)[2]["error"] == "expired_token", "expired_token")
    control(ep, "POST", "/config", {"device_expires_in": 900, "auto_approve": 2, "interval": 0})
    d4 = device_login(c, ep)
    check(poll(c, d4)[2]["error"] == "authorization_pending", "auto approve poll 1")
    st, _, t4 = poll(c, d4)
    check(st == 200 and "refresh_token" in t4, "auto approve poll 2")
    d5 = c.form("/common/oauth2/v2.0/devicecode", client_id="cid", scope="Files.ReadWrite")[2]
    poll(c, d5)
    check("refresh_token" not in poll(c, d5)[2], "no refresh_token without offline_access")
    control(ep, "POST", "/config", {"auto_approve": 0})

    # refresh rotation (1.5)
    rt = t["refresh_token"]
    st, _, t2 = c.form("/common/oauth2/v2.0/token", grant_type="refresh_token", client_id="cid", refresh_token=rt,
                       scope="Files.ReadWrite offline_access")
    check(st == 200 and t2["refresh_token"] != rt and t2["access_token"] != t["access_token"], "refresh rotates")
    st, _, t3 = c.form("/common/oauth2/v2.0/token", grant_type="refresh_token", client_id="cid", refresh_token=rt)
    check(st == 200, "old refresh token still valid without strict_rotation")
    control(ep, "POST", "/config", {"strict_rotation": True})
    rt3 = t3["refresh_token"]
    check(c.form("/common/oauth2/v2.0/token", grant_type="refresh_token", client_id="cid", refresh_token=rt3)[0] == 200, "strict first use")
    st, _, e = c.form("/common/oauth2/v2.0/token", grant_type="refresh_token", client_id="cid", refresh_token=rt3)
    check(st == 400 and e["error"] == "invalid_grant" and e["error_codes"] == [70000], "strict rotation reuse")
    control(ep, "POST", "/config", {"strict_rotation": False})
    toks = control(ep, "GET", "/tokens")
    check(rt in toks["refresh_issued"] and toks["refresh_issued"].index(rt) < toks["refresh_issued"].index(t2["refresh_token"])
          and toks["access_issued_count"] >= 5, "tokens listing")
    st, _, e = c.form("/common/oauth2/v2.0/token", grant_type="refresh_token", client_id="cid", refresh_token=rt, client_secret="x")
    check(st == 401 and e["error"] == "invalid_client", "public client must not send a secret")
    check(c.form("/common/oauth2/v2.0/token", grant_type="password", client_id="cid")[2]["error"] == "unsupported_grant_type", "unsupported grant")

    # authorization code + PKCE (1.4)
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    redirect = "http://localhost:8400/cb"
    q = urllib.parse.urlencode({"client_id": "cid", "response_type": "code", "redirect_uri": redirect,
                                "scope": "Files.ReadWrite offline_access", "state": "st8", "code_challenge": challenge,
                                "code_challenge_method": "S256"})
    st, r, _ = c.req("GET", ep["login_url"] + "/common/oauth2/v2.0/authorize?" + q)
    loc = r.getheader("Location") or ""
    check(st == 302 and loc.startswith(redirect + "?"), "authorize redirect")
    qs = urllib.parse.parse_qs(urllib.parse.urlsplit(loc).query)
    check(qs.get("state") == ["st8"] and qs.get("code"), "authorize code+state")
    code = qs["code"][0]
    st, _, e = c.form("/common/oauth2/v2.0/token", grant_type="authorization_code", client_id="cid", code=code,
                      redirect_uri=redirect, code_verifier=secrets.token_urlsafe(48))
    check(st == 400 and e["error"] == "invalid_grant", "PKCE mismatch")
    st, _, ta = c.form("/common/oauth2/v2.0/token", grant_type="authorization_code", client_id="cid", code=code,
                       redirect_uri=redirect, code_verifier=verifier)
    check(st == 200 and ta.get("refresh_token"), "auth code redeem")
    st, _, e = c.form("/common/oauth2/v2.0/token", grant_type="authorization_code", client_id="cid", code=code,
                      redirect_uri=redirect, code_verifier=verifier)
    check(st == 400 and e["error_codes"] == [54005], "auth code reuse")
    q2 = q.replace("S256", "plain")
    st, r, _ = c.req("GET", ep["login_url"] + "/common/oauth2/v2.0/authorize?" + q2)
    check(st == 302 and "error=invalid_request" in r.getheader("Location"), "authorize requires S256")

    # client credentials (1.6)
    cc = dict(grant_type="client_credentials", client_id="app", client_secret="emulator-secret",
              scope="https://graph.microsoft.com/.default")
    st, _, e = c.form("/common/oauth2/v2.0/token", **cc)
    check(st == 400 and e["error_codes"] == [9001023], "client creds on /common")
    st, _, e = c.form("/contoso.example/oauth2/v2.0/token", **dict(cc, client_secret="wrong"))
    check(st == 401 and e["error"] == "invalid_client" and e["error_codes"] == [7000215], "bad secret")
    st, _, e = c.form("/contoso.example/oauth2/v2.0/token", **dict(cc, scope="Files.ReadWrite.All"))
    check(st == 400 and e["error"] == "invalid_scope" and e["error_codes"] == [70011], "client creds scope")
    st, _, tc = c.form("/contoso.example/oauth2/v2.0/token", **cc)
    check(st == 200 and "refresh_token" not in tc and tc["token_type"] == "Bearer", "client creds token")
    return t2["access_token"], tc["access_token"]


def test_graph(c, ep, app_token):
    # auth errors (9.4)
    saved, c.token = c.token, None
    st, r, e = c.json("GET", c.g("/me/drive"))
    check(st == 401 and e["error"]["code"] == "InvalidAuthenticationToken" and r.getheader("WWW-Authenticate", "").startswith('Bearer realm=""'), "401 without token")
    c.token = "garbage"
    st, r, e = c.json("GET", c.g("/me/drive"))
    check(st == 401 and e["error"]["message"] == "Access token has expired or is not yet valid." and "request-id" in e["error"]["innerError"], "401 bad token")
    c.token = app_token
    st, _, e = c.json("GET", c.g("/me/drive"))
    check(st == 400 and e["error"]["code"] == "BadRequest" and "delegated" in e["error"]["message"], "/me app-only")
    st, _, dr = c.json("GET", c.g("/users/adele@contoso.example/drive"))
    check(st == 200 and dr["id"] == "b!emu-drive-0001", "/users/{upn}/drive app-only")
    check(c.json("GET", c.g("/drives/b!emu-drive-0001/root"))[0] == 200, "/drives/{id} app-only")
    c.token = saved

    st, r, dr = c.json("GET", c.g("/me/drive"))
    check(st == 200 and dr["driveType"] == "business" and dr["owner"]["user"]["displayName"] == "Adele Vance"
          and dr["quota"]["total"] == 5497558138880 and dr["quota"]["state"] == "normal", "drive")
    check(r.getheader("Transfer-Encoding") == "chunked" and r.getheader("request-id") and r.getheader("Date"), "chunked GET + headers")
    st, _, root = c.json("GET", c.g("/me/drive/root"))
    check(st == 200 and "root" in root and root["folder"]["childCount"] == 0, "root item")

    # folders (8.1)
    st, _, f = c.json("POST", c.g("/me/drive/root/children"), {"name": "Docs", "folder": {}, "@microsoft.graph.conflictBehavior": "fail"})
    check(st == 201 and f["folder"]["childCount"] == 0 and "cTag" not in f, "mkdir")
    st, r, e = c.json("POST", c.g("/me/drive/root/children"), {"name": "docs", "folder": {}, "@microsoft.graph.conflictBehavior": "fail"})
    check(st == 409 and e["error"]["code"] == "nameAlreadyExists" and r.getheader("Content-Length"), "mkdir conflict (case-insensitive)")
    st, _, f2 = c.json("POST", c.g("/me/drive/root/children"), {"name": "Docs", "folder": {}, "@microsoft.graph.conflictBehavior": "rename"})
    check(st == 201 and f2["name"] == "Docs 1", "mkdir rename")
    st, _, sub = c.json("POST", c.g("/me/drive/root:/Docs:/children"), {"name": "Sub dir", "folder": {}})
    check(st == 201 and sub["parentReference"]["path"] == "/drive/root:/Docs", "mkdir by path")
    st, _, _ = c.json("POST", c.g("/me/drive/items/%s/children" % sub["id"]), {"name": "Deep", "folder": {}})
    check(st == 201, "mkdir by id")
    check(c.json("POST", c.g("/me/drive/root:/Nope:/children"), {"name": "x", "folder": {}})[0] == 404, "mkdir missing parent")
    st, _, e = c.json("POST", c.g("/me/drive/root/children"), {"name": "bad|name", "folder": {}})
    check(st == 400 and e["error"]["code"] == "invalidRequest", "invalid name")

    # simple upload (6)
    data = b"Hello world"
    st, r, it = c.json("PUT", c.g("/me/drive/root:/Docs/Sub%20dir/hello.txt:/content"), data, {"Content-Type": "text/plain"})
    check(st == 201 and it["size"] == 11 and it["file"]["hashes"]["quickXorHash"] == "SCgDG9jwBhDc4Q1yawMZAAAAAAA=", "simple upload new")
    check(r.getheader("Content-Length") is not None, "PUT result uses Content-Length")
    check(it["parentReference"]["path"] == "/drive/root:/Docs/Sub%20dir", "parentReference.path encoded")
    st, _, it2 = c.json("PUT", c.g("/me/drive/root:/docs/SUB%20DIR/HELLO.txt:/content"), b"Hello again")
    check(st == 200 and it2["id"] == it["id"] and it2["name"] == "hello.txt" and it2["size"] == 11, "simple upload replace (case-insensitive)")
    st, _, e = c.json("PUT", c.g("/me/drive/root:/Docs/Sub%20dir/hello.txt:/content?%40microsoft.graph.conflictBehavior=fail"), b"x")
    check(st == 409 and e["error"]["code"] == "nameAlreadyExists", "simple upload fail conflict")
    st, _, it3 = c.json("PUT", c.g("/me/drive/root:/Docs/Sub%20dir/hello.txt:/content?@microsoft.graph.conflictBehavior=rename"), b"x")
    check(st == 201 and it3["name"] == "hello 1.txt", "simple upload rename")
    check(c.json("PUT", c.g("/me/drive/root:/Missing/x.txt:/content"), b"x")[0] == 404, "simple upload missing parent")
    st, r, e = c.json("PUT", c.g("/me/drive/root:/big.bin:/content"), bytes(4194305))
    check(st == 413 and e["error"]["code"] == "requestEntityTooLarge", "simple upload 413")
    st, _, _ = c.json("PUT", c.g("/me/drive/root:/exact.bin:/content"), bytes(4194304))
    check(st == 201, "simple upload at 4 MiB")
    st, _, z = c.json("PUT", c.g("/me/drive/root:/empty.txt:/content"), b"")
    check(st == 201 and z["size"] == 0 and z["file"]["hashes"]["quickXorHash"] == "AAAAAAAAAAAAAAAAAAAAAAAAAAA=", "zero-byte simple upload")
    st, _, pl = c.json("PUT", c.g("/me/drive/items/%s:/a%%2Bb%%20%%C3%%BC+c.txt:/content" % sub["id"]), b"plus")
    check(st == 201 and pl["name"] == "a+b \u00fc+c.txt", "parent-id path upload, + literal, UTF-8")
    st, _, e = c.json("GET", c.g("/me/drive/root:/Docs/Sub%20dir/a+b%20%C3%BC%2Bc.txt:"))
    check(st == 200 and e["id"] == pl["id"], "trailing colon, + equals %2B")
    st, r, raw = c.req("GET", c.g("/me/drive/root:/Docs/Sub%20dir/a+b%20%C3%BC%2Bc.txt"))
    check(b"\\u00fc" in raw and b"\xc3" not in raw, "non-ASCII emitted as \\u escapes")
    st, _, e = c.json("GET", c.g("/me/drive/root:/nothing/here"))
    check(st == 404 and e["error"]["code"] == "itemNotFound" and e["error"]["message"] == "The resource could not be found.", "404 itemNotFound")
    check(c.json("GET", c.g("/me/drive/root:/a%3Fb"))[0] == 400, "invalid char in path")
    check(c.json("GET", c.g("/me/drive/root:/Docs/../Docs"))[0] == 400, "dot-dot segment")
    check(c.json("GET", c.g("/me/drive/root:/"))[2].get("root") == {}, "root:/ is the root")
    check(c.json("GET", c.g("/me/drive/root::/children"))[0] == 400, "root:: rejected")
    check(c.json("GET", c.g("/me/drive/items/root:/Docs:/children"))[0] == 200, "items/root alias")
    check(c.json("GET", c.g("/me/drive/root:/Docs/children"))[0] == 404, "sub-resource needs a colon")
    st, _, e = c.json("GET", c.g("/me/drive/root:/Docs:/children"))
    check(st == 200 and [x["name"] for x in e["value"]] == ["Sub dir"], "children by path")
    st, _, e = c.json("GET", c.g("/me/drive/items/%s/children" % it["id"]))
    check(st == 200 and e["value"] == [], "children of a file is empty")
    check("@microsoft.graph.downloadUrl" in c.json("GET", c.g("/me/drive/items/" + it["id"]))[2], "downloadUrl on item")
    st, _, e = c.json("GET", c.g("/me/drive/items/%s?$select=id,name,size" % it["id"]))
    check(st == 200 and set(e) <= {"@odata.context", "id", "name", "size"}, "$select")

    # download (5)
    content = bytes(range(256)) * 5000
    c.json("PUT", c.g("/me/drive/root:/Docs/data.bin:/content"), content)
    st, r, body = c.req("GET", c.g("/me/drive/root:/Docs/data.bin:/content"))
    loc = r.getheader("Location", "")
    check(st == 302 and loc.startswith(ep["download_url"] + "/dl/") and "tempauth=" in loc and len(body) == 0, "302 download")
    st, r, body = c.req("GET", loc)
    check(st == 200 and body == content and r.getheader("Content-Length") == str(len(content)), "download body")
    st, r, body = c.req("GET", loc, headers={"Range": "bytes=1000-"})
    check(st == 206 and body == content[1000:] and r.getheader("Content-Range") == "bytes 1000-%d/%d" % (len(content) - 1, len(content)), "Range a-")
    st, r, body = c.req("GET", loc, headers={"Range": "bytes=10-19"})
    check(st == 206 and body == content[10:20], "Range a-b")
    st, r, _ = c.req("GET", loc, headers={"Range": "bytes=%d-" % len(content)})
    check(st == 416 and r.getheader("Content-Range") == "bytes */%d" % len(content), "Range at EOF -> 416")
    st, _, _ = c.req("GET", loc, headers={"Authorization": "Bearer " + c.token}, auth=False)
    check(st == 401, "Authorization on download host -> 401")
    check(c.json("GET", c.g("/me/drive/root:/Docs:/content"))[0] == 404, "folder content")
    control(ep, "POST", "/config", {"download_url_lifetime": 1})
    loc2 = c.req("GET", c.g("/me/drive/root:/Docs/data.bin:/content"))[1].getheader("Location")
    time.sleep(1.2)
    check(c.req("GET", loc2)[0] == 401, "expired download URL")
    control(ep, "POST", "/config", {"download_url_lifetime": 300})

    # paging (4.1)
    st, _, pf = c.json("POST", c.g("/me/drive/root/children"), {"name": "Many", "folder": {}})
    names = ["f%02d.txt" % i for i in range(23)] + ["F%02d-b.txt" % i for i in range(2)]
    for n in names:
        control(ep, "POST", "/seed", {"path": "/Many/" + n, "content_b64": base64.b64encode(n.encode()).decode()})
    control(ep, "POST", "/config", {"page_size": 7})
    got, url, pages = [], c.g("/me/drive/root:/Many:/children"), 0
    while url:
        st, _, pg = c.json("GET", url)
        check(st == 200 and len(pg["value"]) <= 7, "page size")
        got += [x["name"] for x in pg["value"]]
        url = pg.get("@odata.nextLink")
        if url:
            check(url.startswith(ep["graph_url"] + "/") and "$skiptoken=" in url and url.endswith("%3D%3D"), "nextLink absolute with $skiptoken")
        pages += 1
    check(got == sorted(names, key=str.lower) and pages == 4, "all pages, sorted case-insensitively")
    st, _, pg = c.json("GET", c.g("/me/drive/items/%s/children?$top=20" % pf["id"]))
    check(len(pg["value"]) == 20 and "@odata.nextLink" in pg, "$top")
    st, _, pg2 = c.json("GET", pg["@odata.nextLink"])
    check(len(pg2["value"]) == 5 and "@odata.nextLink" not in pg2, "$top second page")
    st, _, pg = c.json("GET", c.g("/me/drive/root:/Many:/children?top=30"))
    check(len(pg["value"]) == 25 and "@odata.nextLink" not in pg, "top without $")
    control(ep, "POST", "/config", {"page_size": 200})

    # delete (8.2) and quota (11)
    q0 = c.json("GET", c.g("/me/drive"))[2]["quota"]
    st, _, _ = c.req("DELETE", c.g("/me/drive/root:/Docs/data.bin"))
    check(st == 204, "delete file")
    q1 = c.json("GET", c.g("/me/drive"))[2]["quota"]
    check(q1["used"] == q0["used"] - len(content) and q1["deleted"] == q0["deleted"] + len(content), "quota after delete")
    check(c.req("DELETE", c.g("/me/drive/items/" + f2["id"]))[0] == 204, "delete folder by id")
    check(c.json("DELETE", c.g("/me/drive/root"))[0] == 403, "delete root -> 403")
    check(c.json("DELETE", c.g("/me/drive/root:/Docs/data.bin"))[0] == 404, "delete missing")
    return sub


def fragment_put(c, url, data, a, total, headers=None):
    h = {"Content-Range": "bytes %d-%d/%d" % (a, a + len(data) - 1, total)}
    h.update(headers or {})
    return c.json("PUT", url, data, h, auth=False)


def test_sessions(c, ep, big):
    body = {"item": {"@microsoft.graph.conflictBehavior": "replace",
                     "fileSystemInfo": {"lastModifiedDateTime": "2021-02-03T04:05:06Z", "createdDateTime": "2020-01-01T00:00:00Z"}}}
    st, r, s = c.json("POST", c.g("/me/drive/root:/Docs/up.bin:/createUploadSession"), body)
    check(st == 200 and s["uploadUrl"].startswith(ep["upload_url"] + "/up/") and s["nextExpectedRanges"] == ["0-"], "create session")
    url = s["uploadUrl"]
    total = 327680 * 3 + 1234
    data = os.urandom(total)
    st, _, e = fragment_put(c, url, data[:327680], 0, total, {"Authorization": "Bearer x"})
    check(st == 401, "Authorization on upload host -> 401")
    st, _, e = fragment_put(c, url, data[:300000], 0, total)
    check(st == 400 and "320 KiB" in e["error"]["message"], "non-multiple fragment")
    st, _, e = fragment_put(c, url, data[327680:655360], 327680, total)
    check(st == 416 and e["error"]["innerError"]["code"] == "fragmentOutOfOrder", "out of order")
    st, _, e = fragment_put(c, url, data[:655360], 0, total)
    check(st == 202 and e["nextExpectedRanges"] == ["655360-"], "fragment 1 (2 units)")
    st, _, e = fragment_put(c, url, data[327680:655360], 327680, total)
    check(st == 416 and e["error"]["code"] == "invalidRange" and e["error"]["innerError"]["code"] == "fragmentOverlap", "overlap")
    st, _, e = fragment_put(c, url, data[655360:983040], 655360, total + 1)
    check(st == 400 and e["error"]["innerError"]["code"] == "fragmentLengthMismatch", "total mismatch")
    st, _, e = c.json("PUT", url, b"", {"Content-Range": "bytes 0--1/0"}, auth=False)
    check(st == 400 and "Content-Range" in e["error"]["message"], "zero-length fragment")
    st, _, e = c.json("GET", url, auth=False)
    check(st == 200 and e["nextExpectedRanges"] == ["655360-"], "session status")
    st, _, e = fragment_put(c, url, data[655360:983040], 655360, total)
    check(st == 202, "fragment 2")
    st, _, it = fragment_put(c, url, data[983040:], 983040, total)
    check(st == 201 and it["size"] == total and it["file"]["hashes"]["quickXorHash"] == qxh(data)
          and it["fileSystemInfo"]["lastModifiedDateTime"] == "2021-02-03T04:05:06Z", "final fragment commits")
    check(control(ep, "GET", "/file?path=/Docs/up.bin") == data, "stored bytes")
    check(c.json("GET", url, auth=False)[0] == 404, "session gone after commit")
    log = control(ep, "GET", "/log")
    ups = [x for x in log if x["listener"] == "upload" and x["method"] == "PUT"]
    check(ups and all("content-range" in x["headers"] and "content-length" in x["headers"] for x in ups), "log has ranges")
    check([x["auth"] for x in ups].count(True) == 1 and ups[0]["headers"]["authorization"] == "<redacted>", "log auth flags")

    # replace via session -> 200; fail -> 409 at creation; name mismatch; cancel
    st, _, s2 = c.json("POST", c.g("/me/drive/root:/Docs/up.bin:/createUploadSession"), {"item": {"@microsoft.graph.conflictBehavior": "replace"}})
    st, _, it2 = fragment_put(c, s2["uploadUrl"], b"tiny", 0, 4)
    check(st == 200 and it2["id"] == it["id"] and it2["size"] == 4, "session replace -> 200")
    st, _, e = c.json("POST", c.g("/me/drive/root:/Docs/up.bin:/createUploadSession"), {"item": {"@microsoft.graph.conflictBehavior": "fail"}})
    check(st == 409 and e["error"]["code"] == "nameAlreadyExists", "session fail+exists -> 409")
    st, _, e = c.json("POST", c.g("/me/drive/root:/Docs/new.bin:/createUploadSession"), {"item": {"name": "other.bin"}})
    check(st == 400, "session name mismatch")
    st, _, s3 = c.json("POST", c.g("/me/drive/items/%s:/n.bin:/createUploadSession" % it["parentReference"]["id"]), {"item": {"name": "n.bin"}})
    check(st == 200, "session by parent id")
    check(c.req("DELETE", s3["uploadUrl"], auth=False)[0] == 204, "cancel session")
    check(c.json("GET", s3["uploadUrl"], auth=False)[0] == 404, "cancelled session 404")
    st, _, s4 = c.json("POST", c.g("/me/drive/root:/Docs/n.bin:/createUploadSession"), {})
    st, _, e = fragment_put(c, s4["uploadUrl"], bytes(62914560), 0, 62914560 * 2)
    check(st == 413 and e["error"]["innerError"]["code"] == "maxFragmentLengthExceeded", "fragment >= 60 MiB -> 413")
    # chunked request body -> 411 (raw socket: http.client would add chunked itself)
    u = urllib.parse.urlsplit(s4["uploadUrl"])
    resp = raw_request(ep, s4["uploadUrl"], b"PUT " + (u.path + "?" + u.query).encode() + b" HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Range: bytes 0-3/8")
    check(resp.startswith(b"HTTP/1.1 411"), "chunked body -> 411")

    # a larger file, streamed (100 MiB with 10 MiB fragments, or 200 MiB with --big)
    size = (200 if big else 30) * 1048576 + 12345
    st, _, s5 = c.json("POST", c.g("/me/drive/root:/Docs/large.bin:/createUploadSession"), {})
    frag, pos, h = 32 * 327680, 0, fakegraph.QuickXorHash()
    t0 = time.time()
    while pos < size:
        n = min(frag, size - pos)
        chunk = (hashlib.sha256(str(pos).encode()).digest() * (n // 32 + 1))[:n]
        h.update(chunk)
        st, _, res = fragment_put(c, s5["uploadUrl"], chunk, pos, size)
        pos += n
    check(st == 201 and res["size"] == size and res["file"]["hashes"]["quickXorHash"] == h.b64(),
          "large session upload (%d MiB in %.1fs)" % (size >> 20, time.time() - t0))
    st, r, _ = c.req("GET", c.g("/me/drive/root:/Docs/large.bin:/content"))
    st, r, body = c.req("GET", r.getheader("Location"), headers={"Range": "bytes=%d-" % (size - 100)})
    check(st == 206 and len(body) == 100, "large download range")


def wire(ep, url, method="GET", headers=None, body=b"", timeout=10):
    """One request on a fresh TLS connection, read until the server ends it.
    Returns (status line and headers as a dict, raw body bytes, how it
    ended): "close_notify" (a clean TLS close), "eof" (TCP closed without
    close_notify), "reset", or "timeout"."""
    u = urllib.parse.urlsplit(url)
    ctx = ssl.create_default_context(cafile=ep["ca"])
    t = ctx.wrap_socket(socket.create_connection((u.hostname, u.port), timeout=timeout),
                        server_hostname=u.hostname, suppress_ragged_eofs=False)
    h = {"Host": u.netloc, "Content-Length": str(len(body))}
    h.update(headers or {})
    target = u.path + ("?" + u.query if u.query else "")
    data, end = b"", None
    try:
        t.sendall(("%s %s HTTP/1.1\r\n%s\r\n" % (method, target, "".join("%s: %s\r\n" % kv for kv in h.items()))).encode() + body)
    except OSError:
        pass            # the server may hang up while the body is still going out
    while end is None:
        try:
            buf = t.recv(65536)
        except ssl.SSLEOFError:
            end = "eof"
        except (ConnectionResetError, BrokenPipeError):
            end = "reset"
        except socket.timeout:
            end = "timeout"
        except ssl.SSLError as e:
            end = "ssl error: %s" % e
        else:
            if not buf:
                end = "close_notify"
            data += buf
    t.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    hdrs = {"": lines[0]} if head else {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return hdrs, rest, end


def dechunk(raw):
    """(data, whether the terminating 0-chunk arrived) of a chunked body."""
    out, pos = b"", 0
    while True:
        nl = raw.find(b"\r\n", pos)
        if nl < 0:
            return out, False
        n = int(raw[pos:nl].split(b";")[0], 16)
        if n == 0:
            return out, raw[nl + 2:nl + 4] == b"\r\n"
        if len(raw) < nl + 4 + n:
            return out + raw[nl + 2:nl + 2 + n], False
        out += raw[nl + 2:nl + 2 + n]
        pos = nl + 4 + n


def http_date(s):
    return email.utils.parsedate_to_datetime(s).timestamp() if s and re.fullmatch(
        r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT", s) else None


def faults(ep, *rules):
    return control(ep, "POST", "/faults", {"rules": list(rules)})["ids"]


def fault_rule(ep, rid):
    return [r for r in control(ep, "GET", "/faults")["rules"] if r["id"] == rid][0]


def log_of(ep, rid):
    return [x for x in control(ep, "GET", "/log") if x.get("fault") == rid]


def test_faults(c, ep):
    t0 = time.time()
    auth = {"Authorization": "Bearer " + c.token}
    # the control API: validation (all or nothing), ids, counters, clear
    for bad in ({"status": 503, "lose_response": True}, {"statuss": 503}, {"path": "(", "status": 500},
                {"stall_after_bytes": 5}, {"listener": "proxy", "status": 500}, {"status": 503, "nth": 0},
                {"lose_response": False}, {"path": "/x"}, {"headers": {"a": "b"}, "expire_token": True}):
        try:
            control(ep, "POST", "/faults", {"rules": [{"status": 500}, bad]})
            check(False, "bad rule accepted: %s" % bad)
        except urllib.error.HTTPError as e:
            check(e.code == 400 and "error" in json.loads(e.read()), "bad rule refused: %s" % bad)
    check(control(ep, "GET", "/faults")["rules"] == [], "a refused batch adds nothing")
    ids = faults(ep, {"path": "^/never", "status": 500}, {"date_skew": 5, "name": "n"})
    ids2 = faults(ep, {"delay": 0})
    check(len(ids) == 2 and ids[0] < ids[1] < ids2[0], "ids increase")
    rs = control(ep, "GET", "/faults")["rules"]
    check([r["id"] for r in rs] == ids + ids2 and rs[1]["name"] == "n" and rs[0]["seen"] == 0 and rs[0]["fired"] == 0
          and rs[0]["path"] == "^/never", "GET /faults")
    control(ep, "POST", "/faults/clear")
    check(control(ep, "GET", "/faults")["rules"] == [], "/faults/clear")
    check(faults(ep, {"status": 500})[0] > ids2[0], "ids keep increasing after clear")
    control(ep, "POST", "/faults/clear")

    # Date on every TLS listener (IMF-fixdate)
    control(ep, "POST", "/seed", {"path": "/Faults/blob.bin", "content_b64": base64.b64encode(bytes(range(256)) * 1200).decode()})
    blob = bytes(range(256)) * 1200
    st, r, _ = c.req("GET", c.g("/me/drive/root:/Faults/blob.bin:/content"))
    dl = r.getheader("Location")
    st, r2, _ = c.req("GET", dl, headers={"Range": "bytes=0-9"})
    st, r3, _ = c.req("GET", ep["login_url"] + "/devicelogin")
    st, _, s = c.json("POST", c.g("/me/drive/root:/Faults/up.bin:/createUploadSession"), {})
    up = s["uploadUrl"]
    st, r4, _ = c.req("GET", up, auth=False)
    now = time.time()
    check(all(abs(http_date(x.getheader("Date")) - now) < 5 for x in (r, r2, r3, r4)), "Date on every listener")

    # status: nth / times, counters, Graph error shape, keep-alive, log
    rid, rid2 = faults(ep, {"listener": "graph", "method": "GET", "path": r"/me/drive$", "nth": 2, "times": 2, "status": 429},
                       {"listener": "graph", "path": r"/me/drive$", "nth": 4, "status": 502})
    u = urllib.parse.urlsplit(ep["graph_url"])
    conn = http.client.HTTPSConnection(u.hostname, u.port, context=c.ctx)
    got = []
    for i in range(5):
        conn.request("GET", "/v1.0/me/drive", headers=auth)
        r = conn.getresponse()
        e = json.loads(r.read())
        got.append(r.status)
        if r.status == 429:
            ie = e["error"]["innerError"]
            check(e["error"]["code"] == "activityLimitReached" and ie["code"] == "throttledRequest" and ie["request-id"]
                  and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", ie["date"]) and e["error"]["message"] == "Injected fault"
                  and r.getheader("request-id") == ie["request-id"], "429 Graph error body")
    conn.close()
    check(got == [200, 429, 429, 502, 200], "nth/times and rule order (%s)" % got)
    r1, r2 = fault_rule(ep, rid), fault_rule(ep, rid2)
    check((r1["seen"], r1["fired"], r2["seen"], r2["fired"]) == (5, 2, 5, 1), "seen/fired counters")
    recs = [x for x in control(ep, "GET", "/log") if x["listener"] == "graph" and x["target"] == "/v1.0/me/drive"][-5:]
    check([x.get("fault") for x in recs] == [None, rid, rid, rid2, None] and all(t0 <= x["t"] <= time.time() for x in recs),
          "log: fault ids and t")
    now = time.time()
    check(all(isinstance(x.get("t"), float) and now - 900 < x["t"] <= now for x in control(ep, "GET", "/log")),
          "every log record has t")
    control(ep, "POST", "/faults/clear")

    # status: retry_after_date consistent with a skewed Date; defaults per status; bodies; headers
    faults(ep, {"listener": "graph", "path": "/me/drive$", "status": 503, "retry_after_date": 30, "date_skew": -7200,
                "headers": {"X-Extra": "1"}})
    st, r, e = c.json("GET", c.g("/me/drive"))
    d, ra = http_date(r.getheader("Date")), http_date(r.getheader("Retry-After"))
    check(st == 503 and e["error"]["code"] == "serviceNotAvailable" and r.getheader("X-Extra") == "1", "503 default body")
    check(d is not None and ra is not None and ra - d == 30 and abs(d - (time.time() - 7200)) < 5, "retry_after_date + date_skew")
    for status, code, inner in ((500, "generalException", None), (502, "BadGateway", None), (504, "GatewayTimeout", None),
                                (401, "InvalidAuthenticationToken", None), (404, "itemNotFound", None),
                                (416, "invalidRange", "fragmentOverlap"), (509, "bandwidthLimitExceeded", None)):
        faults(ep, {"listener": "graph", "path": "/me/drive$", "status": status})
        st, r, e = c.json("GET", c.g("/me/drive"))
        check(st == status and e["error"]["code"] == code and (inner is None or e["error"]["innerError"]["code"] == inner)
              and (status != 401 or r.getheader("WWW-Authenticate", "").startswith("Bearer")), "default body for %d" % status)
    faults(ep, {"listener": "login", "status": 429, "headers": {"Retry-After": "2"}})
    st, r, e = c.form("/common/oauth2/v2.0/devicecode", client_id="cid", scope="Files.ReadWrite")
    check(st == 429 and e["error"] == "temporarily_unavailable" and e["error_description"].startswith("AADSTS")
          and e["error_codes"] and r.getheader("Retry-After") == "2", "login listener: AAD error shape")
    faults(ep, {"listener": "graph", "status": 400, "body": {"error": {"code": "custom"}}},
           {"listener": "graph", "nth": 2, "status": 503, "body": "busy"}, {"listener": "graph", "nth": 3, "status": 200})
    st, r, e = c.json("GET", c.g("/me/drive"))
    check(st == 400 and e == {"error": {"code": "custom"}} and r.getheader("Content-Type") == "application/json", "JSON body as is")
    st, r, e = c.req("GET", c.g("/me/drive"))
    check(st == 503 and e == b"busy" and r.getheader("Content-Type").startswith("text/plain"), "string body")
    st, r, e = c.req("GET", c.g("/me/drive"))
    check(st == 200 and e == b"", "status < 400 without body")
    # status on a fragment: body read and discarded, nothing stored, body_len complete
    rid = faults(ep, {"listener": "upload", "method": "PUT", "status": 503})[0]
    frag = os.urandom(327680)
    st, _, e = fragment_put(c, up, frag, 0, 2 * 327680 + 10)
    check(st == 503 and c.json("GET", up, auth=False)[2]["nextExpectedRanges"] == ["0-"], "status fault on a fragment stores nothing")
    check([x["body_len"] for x in log_of(ep, rid)] == [327680], "status fault: body_len")

    # drop_request_after: N bytes read, connection reset, nothing stored
    rid = faults(ep, {"listener": "upload", "method": "PUT", "drop_request_after": 100000})[0]
    h, b, end = wire(ep, up, "PUT", {"Content-Range": "bytes 0-327679/%d" % (2 * 327680 + 10)}, frag)
    check(h == {} and b == b"" and end in ("reset", "eof"), "drop_request_after: no response (%s)" % end)
    check(c.json("GET", up, auth=False)[2]["nextExpectedRanges"] == ["0-"], "drop_request_after: nothing stored")
    rec = log_of(ep, rid)
    check(len(rec) == 1 and rec[0]["body_len"] == 100000 and rec[0]["status"] == 0, "drop_request_after: log body_len")
    st, _, e = fragment_put(c, up, frag, 0, 2 * 327680 + 10)
    check(st == 202 and e["nextExpectedRanges"] == ["327680-"], "fragment after a drop")

    # lose_response: the fragment is stored, no answer, TCP close without close_notify
    frag2 = os.urandom(327680)
    rid = faults(ep, {"listener": "upload", "method": "PUT", "lose_response": True})[0]
    h, b, end = wire(ep, up, "PUT", {"Content-Range": "bytes 327680-655359/%d" % (2 * 327680 + 10)}, frag2)
    check(h == {} and b == b"" and end == "eof", "lose_response: nothing, no close_notify (%s)" % end)
    check(c.json("GET", up, auth=False)[2]["nextExpectedRanges"] == ["655360-"], "lose_response: fragment stored")
    check([(x["status"], x["body_len"]) for x in log_of(ep, rid)] == [(202, 327680)], "lose_response: log")
    faults(ep, {"listener": "graph", "method": "POST", "lose_response": True})
    h, b, end = wire(ep, c.g("/me/drive/root:/Faults:/children"), "POST", dict(auth, **{"Content-Type": "application/json"}),
                     json.dumps({"name": "made", "folder": {}}).encode())
    check(h == {} and end == "eof" and any(x["path"] == "/Faults/made" for x in control(ep, "GET", "/tree")),
          "lose_response: folder created")

    # next_expected_ranges: odd shapes, state unchanged
    faults(ep, {"listener": "upload", "method": "GET", "next_expected_ranges": ["100-199", "300-"]},
           {"listener": "upload", "method": "GET", "nth": 2, "next_expected_ranges": []})
    check(c.json("GET", up, auth=False)[2]["nextExpectedRanges"] == ["100-199", "300-"], "next_expected_ranges on status")
    check(c.json("GET", up, auth=False)[2]["nextExpectedRanges"] == [], "next_expected_ranges []")
    check(c.json("GET", up, auth=False)[2]["nextExpectedRanges"] == ["655360-"], "next_expected_ranges: state unchanged")
    faults(ep, {"listener": "upload", "method": "PUT", "next_expected_ranges": ["999999999-"]})
    st, _, e = fragment_put(c, up, b"0123456789", 655360, 2 * 327680 + 10)
    check(st == 201 and "nextExpectedRanges" not in e, "next_expected_ranges leaves a commit alone")
    st, _, s = c.json("POST", c.g("/me/drive/root:/Faults/up2.bin:/createUploadSession"), {})
    up2 = s["uploadUrl"]
    st, _, e = fragment_put(c, up2, frag, 0, 327690)
    faults(ep, {"listener": "upload", "method": "PUT", "next_expected_ranges": ["0-"]})
    st, _, e = fragment_put(c, up2, frag, 0, 327690)
    check(st == 416, "next_expected_ranges: only when the reply carries them")

    # body_len of fragment PUTs adds up to the bytes that were sent
    control(ep, "POST", "/log/clear")
    total = 3 * 327680 + 77
    data = os.urandom(total)
    st, _, s = c.json("POST", c.g("/me/drive/root:/Faults/sum.bin:/createUploadSession"), {})
    fragment_put(c, s["uploadUrl"], data[:327680], 0, total)
    faults(ep, {"listener": "upload", "method": "PUT", "drop_request_after": 5000})
    wire(ep, s["uploadUrl"], "PUT", {"Content-Range": "bytes 327680-983039/%d" % total}, data[327680:983040])
    fragment_put(c, s["uploadUrl"], data[327680:983040], 327680, total)
    st, _, it = fragment_put(c, s["uploadUrl"], data[983040:], 983040, total)
    puts = [x["body_len"] for x in control(ep, "GET", "/log") if x["listener"] == "upload" and x["method"] == "PUT"]
    check(st == 201 and puts == [327680, 5000, 655360, 77] and control(ep, "GET", "/file?path=/Faults/sum.bin") == data,
          "fragment body_len sums (%s)" % puts)

    # drop_response_after: the head, N bytes of the wire body, then a close without close_notify
    faults(ep, {"listener": "graph", "method": "GET", "drop_response_after": 50})
    h, b, end = wire(ep, c.g("/me/drive/root:/Faults"), headers=auth)
    check(h.get("").startswith("HTTP/1.1 200") and h.get("transfer-encoding") == "chunked" and len(b) == 50 and end == "eof"
          and not dechunk(b)[1], "drop_response_after on a chunked reply (%d, %s)" % (len(b), end))
    faults(ep, {"listener": "download", "drop_response_after": 1000})
    h, b, end = wire(ep, dl)
    check(h.get("content-length") == str(len(blob)) and b == blob[:1000] and end == "eof", "drop_response_after on a download")

    # truncate_chunked: all the data, chunked, no final 0-chunk
    faults(ep, {"listener": "download", "truncate_chunked": True})
    h, b, end = wire(ep, dl)
    got, complete = dechunk(b)
    check(h.get("transfer-encoding") == "chunked" and "content-length" not in h and got == blob and not complete
          and end == "eof", "truncate_chunked on a Content-Length reply")
    faults(ep, {"listener": "graph", "truncate_chunked": True})
    h, b, end = wire(ep, c.g("/me/drive/root:/Faults/blob.bin"), headers=auth)
    got, complete = dechunk(b)
    check(h.get("").startswith("HTTP/1.1 200") and json.loads(got)["size"] == len(blob) and not complete and end == "eof",
          "truncate_chunked on a chunked reply")

    # stall: nothing for S seconds, other connections unaffected
    rid = faults(ep, {"listener": "graph", "path": "/Faults/blob", "stall": 1.5})[0]
    out = {}
    th = threading.Thread(target=lambda: out.update(zip(("h", "b", "end", "t"), wire(ep, c.g("/me/drive/root:/Faults/blob.bin"),
                                                                                      headers=auth) + (time.time(),))))
    ts = time.time()
    th.start()
    time.sleep(0.3)
    st, _, _ = c.json("GET", c.g("/me/drive"))
    busy = time.time() - ts
    rec = log_of(ep, rid)
    th.join()
    check(st == 200 and busy < 1.2, "a stall does not block other connections")
    check(len(rec) == 1 and rec[0]["status"] == 0, "a stalled request is logged during the stall")
    check(out["h"] == {} and out["end"] == "eof" and 1.4 <= out["t"] - ts < 4, "stall: nothing, then a close")
    faults(ep, {"listener": "download", "stall": 1, "stall_after_bytes": 100})
    ts = time.time()
    h, b, end = wire(ep, dl)
    check(h.get("").startswith("HTTP/1.1 200") and b == blob[:100] and end == "eof" and time.time() - ts >= 0.9,
          "stall_after_bytes")

    # trickle_head: the head a byte at a time, then the body, then a close
    faults(ep, {"listener": "download", "trickle_head": 0.01})
    ts = time.time()
    h, b, end = wire(ep, dl)
    check(h.get("").startswith("HTTP/1.1 200") and b == blob and end == "eof" and time.time() - ts >= 0.5,
          "trickle_head (%.2fs)" % (time.time() - ts))

    # expire_session: the targeted session is forgotten (404 now and later)
    st, _, s = c.json("POST", c.g("/me/drive/root:/Faults/gone.bin:/createUploadSession"), {})
    rid = faults(ep, {"listener": "upload", "method": "GET", "expire_session": True})[0]
    st, _, e = c.json("GET", s["uploadUrl"], auth=False)
    check(st == 404 and e["error"]["innerError"]["code"] == "uploadSessionNotFound" and len(log_of(ep, rid)) == 1, "expire_session")
    check(c.json("GET", s["uploadUrl"], auth=False)[0] == 404, "expire_session: later requests 404")

    # date_skew alone, delay
    faults(ep, {"listener": "graph", "date_skew": 3600}, {"listener": "graph", "nth": 2, "delay": 0.6})
    st, r, _ = c.json("GET", c.g("/me/drive"))
    check(st == 200 and abs(http_date(r.getheader("Date")) - time.time() - 3600) < 5, "date_skew alone")
    ts = time.time()
    st, r, _ = c.json("GET", c.g("/me/drive"))
    check(st == 200 and time.time() - ts >= 0.55, "delay")

    # a clean close still sends close_notify (the checks above tell the difference)
    h, b, end = wire(ep, c.g("/me/drive"), headers=dict(auth, Connection="close"))
    check(h.get("").startswith("HTTP/1.1 200") and end == "close_notify", "normal close has close_notify (%s)" % end)

    # concurrency: exactly `times` requests fire
    rid = faults(ep, {"listener": "graph", "path": "/me/drive$", "times": 5, "status": 503})[0]
    res = []

    def hit():
        cc = http.client.HTTPSConnection(u.hostname, u.port, context=c.ctx, timeout=30)
        for _ in range(4):
            cc.request("GET", "/v1.0/me/drive", headers=auth)
            rr = cc.getresponse()
            rr.read()
            res.append(rr.status)
        cc.close()
    ths = [threading.Thread(target=hit) for _ in range(8)]
    for x in ths:
        x.start()
    for x in ths:
        x.join()
    r1 = fault_rule(ep, rid)
    check(res.count(503) == 5 and res.count(200) == 27 and r1["seen"] == 32 and r1["fired"] == 5, "faults under concurrency")

    # expire_token: Graph answers 401; on the login listener a new token is then issued normally
    faults(ep, {"listener": "graph", "expire_token": True})
    st, _, e = c.json("GET", c.g("/me/drive"))
    check(st == 401 and e["error"]["code"] == "InvalidAuthenticationToken", "expire_token on graph")
    faults(ep, {"listener": "login", "path": "devicecode", "expire_token": True})
    d = c.form("/common/oauth2/v2.0/devicecode", client_id="cid", scope="Files.ReadWrite offline_access")[2]
    control(ep, "POST", "/approve", {"user_code": d["user_code"]})
    st, _, t = poll(c, d)
    check(st == 200, "token after expire_token on login")
    c.token = t["access_token"]
    check(c.json("GET", c.g("/me/drive"))[0] == 200, "new token works")
    check(all(r["fired"] == 1 for r in control(ep, "GET", "/faults")["rules"] if "times" not in r), "every rule fired once")
    control(ep, "POST", "/faults/clear")


def test_faults_reset(ep):
    faults(ep, {"status": 500, "path": "^/never"})
    control(ep, "POST", "/reset")
    check(control(ep, "GET", "/faults")["rules"] == [], "/reset clears faults")


def test_misc(c, ep):
    resp = raw_request(ep, ep["graph_url"], b"GET /v1.0/me/drive/root:/a b HTTP/1.1")
    check(resp.startswith(b"HTTP/1.1 400"), "raw space in target -> 400")
    resp = raw_request(ep, ep["graph_url"], "GET /v1.0/me/drive/root:/\u00fc HTTP/1.1".encode())
    check(resp.startswith(b"HTTP/1.1 400"), "raw non-ASCII in target -> 400")
    # keep-alive and Connection: close
    u = urllib.parse.urlsplit(ep["graph_url"])
    conn = http.client.HTTPSConnection(u.hostname, u.port, context=c.ctx)
    for i in range(5):
        conn.request("GET", "/v1.0/me/drive", headers={"Authorization": "Bearer " + c.token})
        r = conn.getresponse()
        r.read()
        check(r.status == 200 and not r.will_close, "keep-alive request %d" % i)
    conn.request("GET", "/v1.0/me/drive", headers={"Authorization": "Bearer " + c.token, "Connection": "close"})
    r = conn.getresponse()
    r.read()
    check(r.getheader("Connection") == "close", "Connection: close honoured")
    conn.close()
    # PATCH fileSystemInfo (6), If-None-Match (4.3), log ordering, per-connection cap
    st, _, it = c.json("PATCH", c.g("/me/drive/root:/Docs/up.bin"), {"fileSystemInfo": {"lastModifiedDateTime": "2019-05-06T07:08:09.123Z"}})
    check(st == 200 and it["fileSystemInfo"]["lastModifiedDateTime"] == "2019-05-06T07:08:09Z", "PATCH fileSystemInfo")
    check(c.req("GET", c.g("/me/drive/items/" + it["id"]), headers={"If-None-Match": it["eTag"]})[0] == 304, "If-None-Match -> 304")
    check(control(ep, "GET", "/log")[-1]["status"] == 304, "log record present when the response arrives")
    control(ep, "POST", "/config", {"max_requests_per_connection": 2})
    conn = http.client.HTTPSConnection(u.hostname, u.port, context=c.ctx)
    closes = []
    for i in range(2):
        conn.request("GET", "/v1.0/me/drive", headers={"Authorization": "Bearer " + c.token})
        r = conn.getresponse()
        r.read()
        closes.append(r.getheader("Connection"))
    conn.close()
    check(closes == [None, "close"], "max_requests_per_connection")
    control(ep, "POST", "/config", {"max_requests_per_connection": 0})
    # deferred commit (7.3)
    st, _, s = c.json("POST", c.g("/me/drive/root:/defer.txt:/createUploadSession"), {"deferCommit": True})
    st, _, e = fragment_put(c, s["uploadUrl"], b"later", 0, 5)
    check(st == 202 and e["nextExpectedRanges"] == [], "deferred: last fragment -> 202")
    st, _, it = c.json("POST", s["uploadUrl"], b"", auth=False)
    check(st == 201 and it["size"] == 5, "deferred commit")
    # control API
    tree = control(ep, "GET", "/tree")
    check(any(e["path"] == "/Docs/up.bin" and e["type"] == "file" and e["size"] == 4 for e in tree), "/tree")
    check(tree == sorted(tree, key=lambda e: e["path"]), "/tree sorted")
    control(ep, "POST", "/seed", {"path": "/seeded/deep/x.txt", "content_b64": base64.b64encode(b"abc").decode()})
    st, _, it = c.json("GET", c.g("/me/drive/root:/seeded/deep/x.txt"))
    check(st == 200 and it["file"]["hashes"]["quickXorHash"] == "YRDDGAAAAAAAAAAAAwAAAAAAAAA=", "/seed")
    control(ep, "POST", "/expire_tokens")
    check(c.json("GET", c.g("/me/drive"))[0] == 401, "/expire_tokens")
    cfg = control(ep, "POST", "/config", {"page_size": 50})
    check(cfg["page_size"] == 50 and cfg["simple_upload_max"] == 4194304, "/config")
    control(ep, "POST", "/log/clear")
    check(len(control(ep, "GET", "/log")) == 0, "/log/clear")
    control(ep, "POST", "/reset")
    check(control(ep, "GET", "/tree") == [] and control(ep, "GET", "/tokens")["refresh_issued"] == [], "/reset")


# ------------------------------------------------------------------ proxy, public hosts
class ProxyClient(Client):
    """A Client that reaches every host through the emulator's CONNECT proxy."""
    def conn(self, hostport):
        c = self.conns.get(hostport)
        if c is None:
            host, _, port = hostport.partition(":")
            p = urllib.parse.urlsplit(self.ep["proxy"])
            c = self.conns[hostport] = http.client.HTTPSConnection(p.hostname, p.port, context=self.ctx, timeout=60)
            c.set_tunnel(host, int(port or 443))
        return c


def connect(ep, target, extra=b"", s=None):
    """A hand-made CONNECT to the proxy: (status, response head, socket)."""
    if s is None:
        u = urllib.parse.urlsplit(ep["proxy"])
        s = socket.create_connection((u.hostname, u.port), timeout=10)
    s.sendall(b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (target.encode(), target.encode(), extra))
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        b = s.recv(1)                 # byte by byte: what follows belongs to the tunnel
        if not b:
            break
        head += b
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", head)
    if m and m.group(1) != b"200":
        n = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        left = int(n.group(1)) if n else 0
        while left > 0:
            left -= len(s.recv(left))
    return int(m.group(1)) if m else 0, head.decode("latin-1"), s


def tunnel_get(ep, s, host, path, headers=b"", sni=None, verify=True):
    """TLS through an open tunnel, one GET; the raw response head and body."""
    ctx = ssl.create_default_context(cafile=ep["ca"])
    if not verify:
        ctx.check_hostname = False
    with ctx.wrap_socket(s, server_hostname=sni or host.split(":")[0]) as t:
        t.sendall(b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n%s\r\n" % (path.encode(), host.encode(), headers))
        out = b""
        while True:
            try:
                buf = t.recv(65536)
            except (ssl.SSLError, OSError):
                break
            if not buf:
                break
            out += buf
    return out


def test_proxy(c, ep):
    gport = urllib.parse.urlsplit(ep["graph_url"]).port
    bearer = b"Authorization: Bearer " + c.token.encode() + b"\r\n"
    control(ep, "POST", "/log/clear")
    st, head, s = connect(ep, "localhost:%d" % gport)
    check(st == 200 and "content-length" not in head.lower(), "CONNECT localhost:GRAPH -> 200")
    out = tunnel_get(ep, s, "localhost:%d" % gport, "/v1.0/me/drive", bearer)
    check(out.startswith(b"HTTP/1.1 200") and b"b!emu-drive-0001" in out, "request through the tunnel")
    st, _, s = connect(ep, "127.0.0.1:%d" % gport)
    out = tunnel_get(ep, s, "127.0.0.1:%d" % gport, "/v1.0/me/drive", bearer, sni="127.0.0.1")
    check(st == 200 and out.startswith(b"HTTP/1.1 200"), "CONNECT 127.0.0.1:GRAPH -> 200, request through it")
    for target in ("example.com:443", "graph.microsoft.com:443", "localhost:1",
                   "localhost:%d" % urllib.parse.urlsplit(ep["control"]).port):
        st, _, s = connect(ep, target)
        check(st == 403, "CONNECT %s -> 403 (not an emulated host)" % target)
        s.close()
    st, _, s = connect(ep, "no-port")
    check(st == 400, "CONNECT without a port -> 400")
    s.close()
    u = urllib.parse.urlsplit(ep["proxy"])
    with socket.create_connection((u.hostname, u.port), timeout=10) as s:
        s.sendall(b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
        check(s.recv(4096).startswith(b"HTTP/1.1 405"), "a plain GET to the proxy -> 405")
    control(ep, "POST", "/config", {"proxy_auth": "alice:s3cret"})
    st, head, s = connect(ep, "localhost:%d" % gport)
    check(st == 407 and 'proxy-authenticate: basic realm="fakegraph"' in head.lower(), "CONNECT without credentials -> 407")
    st, _, s = connect(ep, "localhost:%d" % gport, b"Proxy-Authorization: Basic %s\r\n" % base64.b64encode(b"alice:wrong"), s)
    check(st == 407, "wrong credentials -> 407 (same connection)")
    st, _, s = connect(ep, "localhost:%d" % gport, b"Proxy-Authorization: Basic %s\r\n" % base64.b64encode(b"alice:s3cret"), s)
    check(st == 200, "right credentials -> 200 (same connection)")
    out = tunnel_get(ep, s, "localhost:%d" % gport, "/v1.0/me/drive", bearer)
    check(out.startswith(b"HTTP/1.1 200"), "request through an authenticated tunnel")
    control(ep, "POST", "/config", {"proxy_auth": ""})
    recs = [x for x in control(ep, "GET", "/log") if x["listener"] == "proxy"]
    check([(x["status"], x["upstream"]) for x in recs][:3] == [(200, "graph"), (200, "graph"), (403, None)]
          and [(x["status"], x["proxy_authorization"], x["proxy_auth_valid"]) for x in recs][-3:]
          == [(407, False, False), (407, True, False), (200, True, True)]
          and all(x["headers"].get("proxy-authorization") in (None, "<redacted>") for x in recs), "proxy records in /log")
    # Host and SNI must name the listener
    st, _, s = connect(ep, "localhost:%d" % gport)
    out = tunnel_get(ep, s, "graph.microsoft.com", "/v1.0/me/drive", bearer, sni="localhost")
    check(out.startswith(b"HTTP/1.1 400") and b"Invalid Hostname" in out, "another host's name in Host -> 400")
    st, _, s = connect(ep, "localhost:%d" % gport)
    out = tunnel_get(ep, s, "localhost:%d" % gport, "/v1.0/me/drive", bearer, sni="login.microsoftonline.com", verify=False)
    check(out.startswith(b"HTTP/1.1 400"), "another host's name in the SNI -> 400")


def test_preauth_bearer(c, ep):
    control(ep, "POST", "/seed", {"path": "/pre/x.bin", "content_b64": base64.b64encode(b"x" * 100).decode()})
    loc = c.req("GET", c.g("/me/drive/root:/pre/x.bin:/content"))[1].getheader("Location")
    hdr = {"Authorization": "Bearer " + c.token}
    check(c.req("GET", loc, headers=hdr, auth=False)[0] == 401, "bearer on the download host -> 401 by default")
    control(ep, "POST", "/config", {"allow_bearer_on_preauth": True})
    st, _, body = c.req("GET", loc, headers=hdr, auth=False)
    check(st == 200 and body == b"x" * 100, "allow_bearer_on_preauth: download with a bearer -> 200")
    st, _, s = c.json("POST", c.g("/me/drive/root:/pre/y.bin:/createUploadSession"), {})
    st, _, it = fragment_put(c, s["uploadUrl"], b"abc", 0, 3, hdr)
    check(st == 201 and it["size"] == 3, "allow_bearer_on_preauth: fragment with a bearer -> 201")
    recs = [x for x in control(ep, "GET", "/log") if x["listener"] in ("download", "upload")][-2:]
    check([(x["auth"], x["status"]) for x in recs] == [(True, 200), (True, 201)], "the bearer is still logged")
    control(ep, "POST", "/config", {"allow_bearer_on_preauth": False})
    st, _, s = c.json("POST", c.g("/me/drive/root:/pre/z.bin:/createUploadSession"), {})
    check(fragment_put(c, s["uploadUrl"], b"abc", 0, 3, hdr)[0] == 401, "bearer on the upload host -> 401 again")


def auth_code(c, ep, client_id, **extra):
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    q = urllib.parse.urlencode({"client_id": client_id, "response_type": "code", "redirect_uri": "http://localhost:53682/",
                                "scope": "Files.ReadWrite offline_access", "code_challenge": challenge,
                                "code_challenge_method": "S256"})
    loc = c.req("GET", ep["login_url"] + "/common/oauth2/v2.0/authorize?" + q)[1].getheader("Location")
    code = urllib.parse.parse_qs(urllib.parse.urlsplit(loc).query)["code"][0]
    return c.form("/common/oauth2/v2.0/token", grant_type="authorization_code", client_id=client_id, code=code,
                  redirect_uri="http://localhost:53682/", code_verifier=verifier, **extra)


def basic_refresh(c, ep, user, secret, rt):
    body = urllib.parse.urlencode({"grant_type": "refresh_token", "refresh_token": rt}).encode()
    cred = base64.b64encode(("%s:%s" % (urllib.parse.quote_plus(user), urllib.parse.quote_plus(secret))).encode()).decode()
    return c.json("POST", ep["login_url"] + "/common/oauth2/v2.0/token", body,
                  {"Content-Type": "application/x-www-form-urlencoded", "Authorization": "Basic " + cred}, auth=False)


def test_confidential(c, ep):
    control(ep, "POST", "/config", {"confidential_clients": "web-app other-app"})
    st, _, e = auth_code(c, ep, "web-app")
    check(st == 401 and e["error"] == "invalid_client" and e["error_codes"] == [7000218], "confidential client without a secret")
    st, _, e = auth_code(c, ep, "web-app", client_secret="wrong")
    check(st == 401 and e["error_codes"] == [7000215], "confidential client, wrong secret")
    st, _, t = auth_code(c, ep, "web-app", client_secret="emulator-secret")
    check(st == 200 and t.get("refresh_token"), "confidential client, auth code + secret")
    st, _, t2 = basic_refresh(c, ep, "web-app", "emulator-secret", t["refresh_token"])
    check(st == 200 and t2.get("access_token"), "refresh with client_secret_basic (RFC 6749 2.3.1)")
    st, _, e = basic_refresh(c, ep, "web-app", "wrong", t2["refresh_token"])
    check(st == 401 and e["error_codes"] == [7000215], "client_secret_basic, wrong secret")
    st, _, t3 = auth_code(c, ep, "cid")
    st, _, e = basic_refresh(c, ep, "cid", "", t3["refresh_token"])
    check(st == 200, "public client id in a Basic header, empty secret")
    st, _, e = basic_refresh(c, ep, "cid", "x", t3["refresh_token"])
    check(st == 401 and e["error_codes"] == [700025], "public client with a Basic secret -> 700025")
    control(ep, "POST", "/config", {"confidential_clients": ""})


def test_move(c, ep):
    control(ep, "POST", "/seed", {"path": "/mv/a.txt", "content_b64": base64.b64encode(b"move me").decode()})
    control(ep, "POST", "/seed", {"path": "/mv/dest/sub", "folder": True})
    control(ep, "POST", "/seed", {"path": "/mv/dest/taken.txt", "content_b64": ""})
    a = c.json("GET", c.g("/me/drive/root:/mv/a.txt"))[2]
    dest = c.json("GET", c.g("/me/drive/root:/mv/dest"))[2]
    sub = c.json("GET", c.g("/me/drive/root:/mv/dest/sub"))[2]
    st, _, e = c.json("PATCH", c.g("/me/drive/items/" + a["id"]), {"parentReference": {"id": dest["id"]}, "name": "taken.txt"})
    check(st == 409 and e["error"]["code"] == "nameAlreadyExists", "move onto a taken name -> 409")
    st, _, e = c.json("PATCH", c.g("/me/drive/items/" + a["id"]), {"parentReference": {"id": "01EMUNOSUCHITEM"}})
    check(st == 404, "move to a missing folder -> 404")
    st, _, e = c.json("PATCH", c.g("/me/drive/items/" + dest["id"]), {"parentReference": {"id": sub["id"]}})
    check(st == 400, "move a folder into its own subfolder -> 400")
    st, _, it = c.json("PATCH", c.g("/me/drive/items/" + a["id"]),
                       {"parentReference": {"id": dest["id"], "driveId": "b!emu-drive-0001"}, "name": "b.txt"})
    check(st == 200 and it["name"] == "b.txt" and it["parentReference"]["path"] == "/drive/root:/mv/dest"
          and it["id"] == a["id"], "move and rename by parentReference (PATCH)")
    paths = {e["path"] for e in control(ep, "GET", "/tree")}
    check("/mv/dest/b.txt" in paths and "/mv/a.txt" not in paths, "moved in the tree")
    st, _, it = c.json("PATCH", c.g("/me/drive/items/" + dest["id"]), {"parentReference": {"id": "root"}})
    check(st == 200 and "/dest/b.txt" in {e["path"] for e in control(ep, "GET", "/tree")}, "move a folder to the root")


def test_public(big):
    """A second emulator with --public-hosts, reached only through its proxy."""
    tmp = tempfile.mkdtemp(prefix="fakegraph-selftest-pub-")
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "fakegraph.py"), "--dir", tmp, "--public-hosts"],
                            stdout=subprocess.PIPE)
    try:
        epf = os.path.join(tmp, "endpoints.json")
        t0 = time.time()
        while not os.path.exists(epf):
            if proc.poll() is not None or time.time() - t0 > 10:
                raise SystemExit("emulator --public-hosts did not start")
            time.sleep(0.02)
        ep = json.load(open(epf))
        check((ep["login_url"], ep["graph_url"], ep["download_url"], ep["upload_url"])
              == ("https://login.microsoftonline.com", "https://graph.microsoft.com/v1.0",
                  "https://my.microsoftpersonalcontent.com", "https://contoso-my.sharepoint.com")
              and ep["proxy"].startswith("http://127.0.0.1:"), "public endpoints.json")
        with open(os.path.join(tmp, "odcp", "config")) as f:
            prof = f.read()
        check("login_url" not in prof and "graph_url" not in prof and ("cacert = %s\n" % ep["ca"]) in prof,
              "public odcp profile: default endpoints, the test CA")
        c = ProxyClient(ep)
        c.conn("login.microsoftonline.com").connect()
        sans = {v for _, v in c.conns["login.microsoftonline.com"].sock.getpeercert()["subjectAltName"]}
        check(sans >= {"login.microsoftonline.com", "graph.microsoft.com", "my.microsoftpersonalcontent.com",
                       "contoso-my.sharepoint.com", "localhost"}, "leaf certificate names the real hosts")
        control(ep, "POST", "/config", {"interval": 0})
        d = device_login(c, ep)
        control(ep, "POST", "/approve", {"user_code": d["user_code"]})
        st, _, t = poll(c, d)
        check(st == 200 and d["verification_uri"] == "https://login.microsoftonline.com/devicelogin", "device code at the real login host")
        c.token = t["access_token"]
        st, r, dr = c.json("GET", c.g("/me/drive"))
        check(st == 200 and dr["id"] == "b!emu-drive-0001", "Graph at graph.microsoft.com")
        for i in range(3):
            control(ep, "POST", "/seed", {"path": "/P/f%d.txt" % i, "content_b64": base64.b64encode(b"abc").decode()})
        control(ep, "POST", "/config", {"page_size": 2})
        st, _, pg = c.json("GET", c.g("/me/drive/root:/P:/children"))
        nl = pg.get("@odata.nextLink", "")
        check(nl.startswith("https://graph.microsoft.com/v1.0/") and len(c.json("GET", nl)[2]["value"]) == 1, "nextLink at the real host")
        check(pg["value"][0]["@microsoft.graph.downloadUrl"].startswith("https://my.microsoftpersonalcontent.com/dl/"),
              "downloadUrl at the real download host")
        st, r, _ = c.req("GET", c.g("/me/drive/root:/P/f0.txt:/content"))
        loc = r.getheader("Location", "")
        check(st == 302 and loc.startswith("https://my.microsoftpersonalcontent.com/dl/"), "302 Location at the real download host")
        check(c.req("GET", loc)[2] == b"abc", "download through the proxy")
        st, _, s = c.json("POST", c.g("/me/drive/root:/P/up.bin:/createUploadSession"), {})
        check(s["uploadUrl"].startswith("https://contoso-my.sharepoint.com/up/"), "uploadUrl at the real upload host")
        st, _, it = fragment_put(c, s["uploadUrl"], b"hello", 0, 5)
        check(st == 201 and it["size"] == 5, "upload through the proxy")
        c.token = "garbage"
        st, r, _ = c.json("GET", c.g("/me/drive"))
        check("https://login.microsoftonline.com/common/oauth2/authorize" in r.getheader("WWW-Authenticate", ""), "401 names the real login host")
        log = control(ep, "GET", "/log")
        names = {"login": "login.microsoftonline.com", "graph": "graph.microsoft.com",
                 "download": "my.microsoftpersonalcontent.com", "upload": "contoso-my.sharepoint.com"}
        check(all(x["sni"] == names[x["listener"]] for x in log if x["listener"] in names), "log: SNI of each real host")
        check({x["target"] for x in log if x["listener"] == "proxy"} == {h + ":443" for h in names.values()}, "log: CONNECT targets")
        # the routing checks the SNI and the Host header against the listener
        st, _, sk = connect(ep, "graph.microsoft.com:443")
        out = tunnel_get(ep, sk, "graph.microsoft.com", "/v1.0/me/drive", sni="login.microsoftonline.com")
        check(out.startswith(b"HTTP/1.1 400") and b"Invalid Hostname" in out, "public: SNI of another host -> 400")
        st, _, sk = connect(ep, "graph.microsoft.com:443")
        out = tunnel_get(ep, sk, "login.microsoftonline.com", "/v1.0/me/drive", sni="graph.microsoft.com")
        check(out.startswith(b"HTTP/1.1 400"), "public: Host of another host -> 400")
        st, _, sk = connect(ep, "graph.microsoft.com:8443")
        check(st == 403, "public: a real name on another port -> 403")
        sk.close()
        st, _, sk = connect(ep, ep["listeners"]["graph"])
        out = tunnel_get(ep, sk, "localhost:" + ep["listeners"]["graph"].split(":")[1], "/v1.0/me/drive")
        check(out.startswith(b"HTTP/1.1 401"), "public: the listener still answers as localhost:PORT")
        proc.send_signal(signal.SIGTERM)
        check(proc.wait(timeout=10) == 0, "public: clean exit on SIGTERM")
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    big = "--big" in sys.argv
    t0 = time.time()
    test_qxh()
    print("quickXorHash vectors: %.1fs" % (time.time() - t0))
    tmp = tempfile.mkdtemp(prefix="fakegraph-selftest-")
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "fakegraph.py"), "--dir", tmp], stdout=subprocess.PIPE)
    try:
        t0 = time.time()
        epf = os.path.join(tmp, "endpoints.json")
        while not os.path.exists(epf):
            if proc.poll() is not None or time.time() - t0 > 10:
                raise SystemExit("emulator did not start")
            time.sleep(0.02)
        ep = json.load(open(epf))
        c = Client(ep)
        test_tls(ep)
        c.token, app_token = test_identity(c, ep)
        test_graph(c, ep, app_token)
        test_sessions(c, ep, big)
        test_faults(c, ep)
        test_proxy(c, ep)
        test_preauth_bearer(c, ep)
        test_confidential(c, ep)
        test_move(c, ep)
        test_misc(c, ep)
        test_faults_reset(ep)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=10)
        check(rc == 0, "clean exit on SIGTERM (rc=%s)" % rc)
        check(proc.stdout.read() == b"", "nothing on stdout without --verbose")
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    test_public(big)
    print("emulator: %d passed, %d failed" % (COUNT[0] - len(FAILS), len(FAILS)))
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
