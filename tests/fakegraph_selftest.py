#!/usr/bin/env python3
"""Self-test for tests/fakegraph.py (python3 stdlib + openssl CLI).

    python3 tests/fakegraph_selftest.py [--big]     (--big adds a 200 MiB session upload)

Starts the emulator in a temporary directory, exercises every endpoint over
real TLS connections and checks the quickXorHash vectors of graph-api.md 10.2.
"""
import base64, hashlib, http.client, json, os, re, secrets, shutil, signal, socket, ssl
import subprocess, sys, tempfile, time, urllib.parse, urllib.request

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
        check(time.time() - t0 < 2, "start-up under 2 s (%.2fs)" % (time.time() - t0))
        ep = json.load(open(epf))
        c = Client(ep)
        test_tls(ep)
        c.token, app_token = test_identity(c, ep)
        test_graph(c, ep, app_token)
        test_sessions(c, ep, big)
        test_misc(c, ep)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=10)
        check(rc == 0, "clean exit on SIGTERM (rc=%s)" % rc)
        check(proc.stdout.read() == b"", "nothing on stdout without --verbose")
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d of %d checks failed" % (len(FAILS), COUNT[0]) if FAILS else "all %d checks passed" % COUNT[0])
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
