#!/usr/bin/env python3
"""fakegraph: a local emulator of the Microsoft identity platform and of
Microsoft Graph / OneDrive, for testing odcp.  Python 3 standard library only;
the `openssl` command line makes the test PKI at start-up.

    python3 tests/fakegraph.py --dir STATEDIR [--auto-approve N] [--page-size N]
                               [--interval S] [--verbose]

Its value is fidelity: it should behave like the real service, quirks
included.  Section numbers refer to the team's Graph reference, ../shared/graph-api.md.

On start it writes STATEDIR/endpoints.json (the URLs below, the CA, the pid)
and STATEDIR/odcp/config, a ready odcp profile: ODCP_CONFIG_DIR=STATEDIR/odcp.
A device code is approved by GET https://localhost:LOGIN/devicelogin?code=CODE
(the person typing the code), by --auto-approve N (on the Nth poll), or by the
control API.

Listeners (127.0.0.1, ephemeral ports, TLS 1.2+, HTTP/1.1 keep-alive):
  login     identity platform (1.3 device code, 1.4 auth code + PKCE,
            1.5 refresh with rotation, 1.6 client credentials, 1.7 formats)
  graph     /v1.0: drive roots (3.1), item addressing by id and path with the
            colon syntax, per-segment percent-decoding, case-insensitive
            lookup, name rules (3.2-3.4), children with paging (4.1),
            driveItem JSON with noise fields (4.2, 4.3), /content 302 (5.1),
            simple upload (6), createUploadSession (7.1), create folder and
            delete to a recycle bin (8), Graph error bodies and 401 details
            (9.1-9.4), quota (11).
  download  pre-authenticated bytes with Range (5.2, 5.3); Authorization -> 401.
  upload    upload sessions: fragments, status, cancel (7.2-7.5).
  control   plain HTTP test API, JSON in and out:
            GET /log (every request: listener, method, target, auth present,
            headers with Authorization redacted, body_len, status),
            POST /log/clear, GET|POST /config (page_size, token_lifetime,
            auto_approve, interval, device_expires_in, strict_rotation,
            simple_upload_max, client_secret, download_url_lifetime, ...),
            GET /devicecodes, POST /approve|/deny {"user_code"}, GET /tree,
            GET /file?path=, POST /seed {"path", "content_b64"|"folder"},
            POST /seed_many {"folder", "count"} (bench), POST /expire_tokens,
            GET /tokens, POST /reset, POST /shutdown.

Quirks deliberately reproduced: GET JSON is sent chunked, in several pieces;
long opaque tempauth URLs (> 1 KB); nextLink with a percent-encoded skiptoken
that must be replayed verbatim; "+" in a path is a literal plus; cTag absent
on folders (business drive); refresh tokens rotate; raw spaces or non-ASCII
bytes in the request target get a front-end 400; chunked request bodies get
411; non-ASCII in JSON is \\u-escaped; Content-Type of the token endpoint must
be form-encoded; a public client sending a secret gets AADSTS700025; GET /me
needs User.Read in the token; $select drops the download URL unless spelled
select= or content.downloadUrl (4.1).  quickXorHash: section 10.

Readings chosen where the reference is silent or conflicting:
  * simple upload (PUT .../content) into a missing folder: 404 itemNotFound,
    nothing is created; the same for upload sessions.
  * /content on a folder: 404 itemNotFound.
  * createUploadSession default conflict behaviour: replace (observed), not
    the documented fail; create-folder default: fail.
  * the service does not reject a fragment that is not a multiple of 320 KiB
    until commit time; we reject it at once with 400 (stricter, same fix).
  * quota.remaining = total - used - deleted (the recycle bin counts).
  * client credentials on common, organizations or consumers: AADSTS9001023.
  * old refresh tokens stay valid unless strict_rotation (1.5: Microsoft does
    not revoke on use); after expired_token, a device code answers
    invalid_grant (RFC 8628 servers may do so, 1.3).
  * business drive: timestamps have whole seconds, no cTag on folders,
    drive and item ids are opaque and compared exactly.
Extra config keys: upload_session_lifetime (s, default 900,
pushed forward by each fragment) and max_requests_per_connection (0 = no
limit; the server closes with "Connection: close" after N requests).  /seed
accepts an optional "mtime" (ISO 8601 or Unix seconds); /tree entries add
"modified" (ISO) next to "mtime" (Unix seconds); log records add "sni",
"t" (when the request head arrived) and "fault" (the id of the rule that
served it).

Fault injection: POST /faults {"rules": [RULE, ...]} adds rules (all or
none; 400 names a bad field) and answers {"ids": [...]}; GET /faults shows
them with their counters "seen" and "fired"; POST /faults/clear and
/reset drop them.  A RULE matches on "listener" (login, graph, download,
upload or any), "method" and "path" (a regex searched in the raw target);
it fires for the "nth" (default 1) to the nth+"times"-1 matching request.
One action per rule:
  "status": N [+ "headers", "body", "retry_after_date": S]  a canned
      response (a Graph or AADSTS error body fitting the host unless
      "body" is given; retry_after_date makes Retry-After an HTTP-date S
      seconds after the response's own Date)
  "drop_request_after": N   read N request-body bytes, then close (RST
      unless "rst": false)
  "lose_response": true     do the request, send nothing, close
  "drop_response_after": N  do the request, send the head and N body bytes
  "truncate_chunked": true  send the body chunked without its last chunk
  "stall": S [+ "stall_after_bytes": N]  say nothing (or N body bytes) for
      S seconds, then close
  "trickle_head": S         send the response head a byte every S seconds
      (the body then as usual), then close
  "expire_session": true    the upload session of this URL vanishes first
  "expire_token": true      every access token expires first
  "next_expected_ranges": [...]  the nextExpectedRanges the answer shows
  "endless_body": S         a 200 whose chunked JSON body is "{" and then
      white space, as fast as it goes, for S seconds (or until the client
      leaves), then close
and alone or with any action: "date_skew": S (the Date header is off by S
seconds), "delay": S (wait before answering), "ignore_range": true (the
download host sends the whole file, 200, whatever Range asked).

Proxy: endpoints.json "proxy" is a plain-HTTP CONNECT proxy to every
listener (its localhost:port); config "proxy_auth" = "user:password" makes
it answer 407 without those Basic credentials.  --public-hosts adds the real
names (PUBLIC_HOSTS, port 443) to the proxy and to the certificates, and the
ready odcp profile then uses odcp's default endpoints.  Config
"allow_bearer_on_preauth" makes the download and upload hosts record a
bearer instead of answering 401 (for rclone 1.60, tests/fidelity);
"confidential_clients" lists client ids that must send client_secret.
"""

import argparse, base64, bisect, datetime, hashlib, http.client, json, mimetypes, os
import re, secrets, shutil, signal, socket, ssl, struct, subprocess, sys, threading
import time, urllib.parse, uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DRIVE_ID = "b!emu-drive-0001"
DRIVE_TYPE = "business"
USER = {"upn": "adele@contoso.example", "displayName": "Adele Vance",
        "id": "87d349ed-44d7-43e1-9a83-5f2406dee5bd"}
QUOTA_TOTAL = 5497558138880
WEB_BASE = "https://contoso-my.sharepoint.example/personal/adele_contoso_example/Documents"
FRAGMENT_UNIT = 327680            # 320 KiB (7.2)
MAX_FRAGMENT = 62914560           # 60 MiB: a fragment must be smaller (7.2)
MAX_FILE = 250 * 1000 ** 3        # 250 GB (7.5)
DRAIN_LIMIT = 256 * 1024 * 1024   # unread request bodies up to this are drained
# --public-hosts: the real names each listener answers to (5.1, 7.1, 12).  The
# drive is a business one, but the two pre-authenticated listeners need
# distinct names for the proxy to route them: uploads take the business
# host (7.1), downloads the host where a leaked bearer was seen to get 401 (5.1).
PUBLIC_HOSTS = {"login": "login.microsoftonline.com", "graph": "graph.microsoft.com",
                "download": "my.microsoftpersonalcontent.com", "upload": "contoso-my.sharepoint.com"}
DEFAULT_CONFIG = {
    "page_size": 200, "token_lifetime": 3599, "auto_approve": 0, "interval": 5,
    "device_expires_in": 900, "strict_rotation": False,
    "simple_upload_max": 4194304, "client_secret": "emulator-secret",
    "download_url_lifetime": 300,
    # extras: session lifetime, pushed forward by each fragment
    # (7.4); and an optional cap on requests per connection (0 = unlimited).
    "upload_session_lifetime": 900, "max_requests_per_connection": 0,
    # the CONNECT proxy: "user:password" makes it demand Basic credentials
    # (407 otherwise); pre-authenticated hosts: record a bearer, don't refuse
    # it (only for clients that still send one, e.g. rclone before 1.66);
    # client ids (space-separated) registered as confidential: they must
    # authenticate with client_secret on every token grant (2.3).
    "proxy_auth": "", "allow_bearer_on_preauth": False, "confidential_clients": "",
    # 7.3 [OBS]: a second session for an item that has a live one was once
    # refused (409 nameAlreadyExists, "An upload session already exists
    # for this file"); on: refuse it so, off: allow it (both are possible)
    "one_session_per_item": False,
    # 10.3: which hashes a file item shows ("quickXorHash", "sha1Hash", or
    # "" for none: "a missing hash is not an error"); hashes_late: the
    # answer to an upload has none, a later GET has them (7.6)
    "hashes": "quickXorHash", "hashes_late": False,
}
INVALID_NAME_CHARS = set('"*:<>?/\\|')
RESERVED_NAMES = {".lock", "con", "prn", "aux", "nul", "desktop.ini"} | \
    {"com%d" % i for i in range(10)} | {"lpt%d" % i for i in range(10)}
GRAPH_JSON = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"


# ---------------------------------------------------------------- quickXorHash (10)
class QuickXorHash:
    """Section 10.1.  Bytes at equal positions mod 160 land on the same bit
    offset, so each update XOR-folds its input into one 160-byte block with
    big-integer operations and then applies 160 rotations."""
    def __init__(self):
        self.acc = 0
        self.length = 0

    def update(self, data):
        n = len(data)
        if not n:
            return
        pad = (-n) % 160
        x = int.from_bytes(bytes(data) + b"\0" * pad, "little")
        blocks = (n + pad) // 160
        while blocks > 1:
            half = blocks // 2
            bits = half * 1280
            x = (x & ((1 << bits) - 1)) ^ (x >> bits)
            blocks -= half
        start = self.length % 160
        for j in range(160):
            b = (x >> (8 * j)) & 0xFF
            if b:
                off = ((start + j) % 160) * 11 % 160
                v = b << off
                self.acc ^= (v | (v >> 160)) & ((1 << 160) - 1)
        self.length += n

    def digest(self):
        return (self.acc ^ (self.length << 96)).to_bytes(20, "little")

    def b64(self):
        return base64.b64encode(self.digest()).decode()


def qxh_file(path):
    h = QuickXorHash()
    with open(path, "rb") as f:
        while True:
            buf = f.read(160 * 65536)
            if not buf:
                return h.b64()
            h.update(buf)


# ---------------------------------------------------------------- helpers
def iso(t):      # business drives keep whole seconds (4.2)
    return datetime.datetime.fromtimestamp(int(t), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(s):
    m = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", str(s))
    if not m:
        raise ValueError(s)
    tz = datetime.timezone.utc
    if m.group(8) != "Z":
        sign = 1 if m.group(8)[0] == "+" else -1
        tz = datetime.timezone(sign * datetime.timedelta(hours=int(m.group(8)[1:3]), minutes=int(m.group(8)[4:6])))
    d = datetime.datetime(*[int(m.group(i)) for i in range(1, 7)], tzinfo=tz)
    return d.timestamp()


def name_problem(name):
    """Return (inner code, message) if a name breaks the rules of 3.4."""
    if not name or any(c in INVALID_NAME_CHARS or ord(c) < 32 for c in name) or name != name.strip(" "):
        return "invalidPath", "Name contains invalid characters or leading/trailing spaces."
    return None


def create_problem(name, folder):
    """Extra rules applied only when creating (3.4 reserved names)."""
    low = name.lower()
    if low in RESERVED_NAMES or low.startswith("~$") or "_vti_" in low:
        return "nameContainsInvalidCharacters", "The name is reserved."
    if folder and name.endswith("."):
        return "nameContainsInvalidCharacters", "Folder names cannot end with a period."
    return None


class Reply(Exception):
    """Raised by request handling to send a Graph-style error."""
    def __init__(self, status, code, message, inner=None, headers=None):
        super().__init__(message)
        self.status, self.code, self.message, self.inner = status, code, message, inner
        self.headers = headers or {}


class ClientGone(Exception):
    pass


# ---------------------------------------------------------------- drive model
class Node:
    def __init__(self, name, parent, folder):
        self.id = "01EMU" + base64.b32encode(secrets.token_bytes(17)).decode()[:27]
        self.name, self.parent, self.folder = name, parent, folder
        self.children = {} if folder else None      # lower(name) -> Node
        self.etag_guid = str(uuid.uuid4()).upper()
        self.version = 1
        now = time.time()
        self.created = self.modified = self.fs_created = self.fs_modified = now
        self.size, self.blob, self.qxh, self.mime = 0, None, None, None

    def path(self):
        parts, n = [], self
        while n.parent is not None:
            parts.append(n.name)
            n = n.parent
        return "/" + "/".join(reversed(parts))

    def total_size(self):
        return sum(c.total_size() for c in self.children.values()) if self.folder else self.size

    def walk(self):
        for c in list(self.children.values()) if self.folder else []:
            yield c
            yield from c.walk()


class Emulator:
    def __init__(self, statedir, config):
        self.dir = os.path.abspath(statedir)
        self.config = config
        self.lock = threading.RLock()
        self.blobdir = os.path.join(self.dir, "blobs")
        self.tmpdir = os.path.join(self.dir, "tmp")
        self.urls = {}
        self.ports, self.proxy_map = {}, {}     # listener -> port; CONNECT target -> listener
        self.verbose = False
        self.stop = threading.Event()
        self.faults = Faults()
        self.reset()

    def reset(self):
        with self.lock:
            for d in (self.blobdir, self.tmpdir):
                shutil.rmtree(d, ignore_errors=True)
                os.makedirs(d)
            self.root = Node("root", None, True)
            self.byid = {self.root.id: self.root}
            self.recycled_bytes = 0
            self.log, self.seq = [], 0
            self.devicecodes, self.authcodes = {}, {}
            self.refresh, self.access = {}, {}
            self.refresh_issued, self.access_count = [], 0
            self.sessions, self.downloads = {}, {}
            self.sort_cache = {}
            self.faults.clear()

    # ---- tree helpers (caller holds self.lock)
    def resolve(self, base, segments):
        """Walk segments from base.  Returns (node or None, parent or None, last name)."""
        node, parent = base, None
        for seg in segments:
            if node is None or not node.folder:
                return None, None, seg
            parent, node = node, node.children.get(seg.lower())
        return node, parent, (segments[-1] if segments else None)

    def sorted_children(self, n):
        """A folder's children in listing order, and their sort keys; cached
        per folder version, so paging a 100,000-item folder stays linear."""
        if not n.folder:
            return [], []
        c = self.sort_cache.get(n.id)
        if c is None or c[0] != n.version:
            kids = sorted(n.children.values(), key=lambda k: (k.name.lower(), k.name))
            c = (n.version, kids, [(k.name.lower(), k.name) for k in kids])
            self.sort_cache[n.id] = c
        return c[1], c[2]

    def new_blob(self):
        return os.path.join(self.blobdir, secrets.token_hex(16))

    def add_child(self, parent, name, folder):
        n = Node(name, parent, folder)
        parent.children[name.lower()] = n
        self.byid[n.id] = n
        parent.version += 1
        return n

    def remove(self, node, recycle=True):
        for n in [node] + list(node.walk()):
            self.byid.pop(n.id, None)
            if not n.folder:
                if recycle:
                    self.recycled_bytes += n.size
                if n.blob:
                    try:
                        os.unlink(n.blob)
                    except OSError:
                        pass
        del node.parent.children[node.name.lower()]
        node.parent.version += 1

    def set_content(self, node, blobpath, size, qxh, fs_mtime=None, fs_ctime=None):
        old = node.blob
        node.blob, node.size, node.qxh = blobpath, size, qxh
        node.mime = mimetypes.guess_type(node.name)[0] or "application/octet-stream"
        now = time.time()
        node.modified = now
        node.fs_modified = fs_mtime if fs_mtime is not None else now
        if fs_ctime is not None:
            node.fs_created = fs_ctime
        node.version += 1
        if old and old != blobpath:
            try:
                os.unlink(old)
            except OSError:
                pass

    def unique_name(self, parent, name):
        stem, ext = os.path.splitext(name) if "." in name[1:] else (name, "")
        i = 1
        while (stem + " %d" % i + ext).lower() in parent.children:
            i += 1
        return stem + " %d" % i + ext

    def used(self):
        return sum(n.size for n in self.root.walk() if not n.folder)

    # ---- JSON shapes (3.1, 4.2, 11)
    def drive_json(self):
        with self.lock:
            used, deleted = self.used(), self.recycled_bytes
            created = self.root.created
        owner = {"user": {"email": USER["upn"], "id": USER["id"], "displayName": USER["displayName"]}}
        return {"@odata.context": self.urls["graph_url"] + "/$metadata#drives/$entity",
                "createdDateTime": iso(created), "description": "", "id": DRIVE_ID,
                "lastModifiedDateTime": iso(time.time()), "name": "OneDrive", "webUrl": WEB_BASE,
                "driveType": DRIVE_TYPE, "createdBy": {"user": {"displayName": "System Account"}},
                "lastModifiedBy": {"user": {"email": USER["upn"], "id": USER["id"], "displayName": USER["displayName"]}},
                "owner": owner,
                "quota": {"deleted": deleted, "remaining": QUOTA_TOTAL - used - deleted, "state": "normal",
                          "total": QUOTA_TOTAL, "used": used, "storagePlanInformation": {"upgradeAvailable": False}}}

    def item_json(self, n, with_url=True, upload=False):
        who = {"application": {"displayName": "fakegraph \u00e9mulateur", "id": "de8bc8b5-d9f9-48b1-a8ad-b748da725064"},
               "user": {"email": USER["upn"], "id": USER["id"], "displayName": USER["displayName"]}}
        d = {}
        if with_url and not n.folder:
            d["@microsoft.graph.downloadUrl"] = self.download_url(n)
        d.update({"createdBy": who, "createdDateTime": iso(n.created), "eTag": '"{%s},%d"' % (n.etag_guid, n.version),
                  "id": n.id, "lastModifiedBy": who, "lastModifiedDateTime": iso(n.modified), "name": n.name})
        if n.parent is None:
            d["parentReference"] = {"driveType": DRIVE_TYPE, "driveId": DRIVE_ID}
        else:
            pp = n.parent.path()
            enc = "" if pp == "/" else "/" + "/".join(urllib.parse.quote(s, safe="!$&'()*+,;=@") for s in pp.split("/")[1:])
            d["parentReference"] = {"driveType": DRIVE_TYPE, "driveId": DRIVE_ID, "id": n.parent.id,
                                    "name": n.parent.name if n.parent.parent else "Documents", "path": "/drive/root:" + enc,
                                    "siteId": "8f1b6f3c-4c0e-4f7e-9d1a-0f7b1e2c3d4e"}
        d["webUrl"] = WEB_BASE + urllib.parse.quote(n.path() if n.parent else "")
        if not n.folder:
            d["cTag"] = '"c:{%s},%d"' % (n.etag_guid, n.version)   # business: no cTag on folders (4.2)
            kind = self.config["hashes"]
            hashes = {} if not kind or (upload and self.config["hashes_late"]) else \
                {kind: n.qxh if kind == "quickXorHash" else hashlib.sha1(n.qxh.encode()).hexdigest().upper()}
            d["file"] = {"hashes": hashes, "irmEffectivelyEnabled": False, "mimeType": n.mime}
        d["fileSystemInfo"] = {"createdDateTime": iso(n.fs_created), "lastModifiedDateTime": iso(n.fs_modified)}
        if n.folder:
            d["folder"] = {"childCount": len(n.children)}
        if n.parent is None:
            d["root"] = {}
        d["shared"] = {"effectiveRoles": ["write"], "scope": "users",
                       "owner": {"user": {"displayName": USER["displayName"], "id": USER["id"]}}}
        d["size"] = n.total_size()
        return d

    def download_url(self, n):
        key, ta = secrets.token_urlsafe(24), secrets.token_urlsafe(1100)
        with self.lock:
            now = time.time()
            if len(self.downloads) > 20000:      # forget expired, then the oldest half
                live = [(k, v) for k, v in self.downloads.items() if v["expires"] > now]
                self.downloads = dict(live[len(live) // 2:] if len(live) > 10000 else live)
            self.downloads[key] = {"id": n.id, "tempauth": ta, "expires": now + self.config["download_url_lifetime"]}
        return "%s/dl/%s?tempauth=%s" % (self.urls["download_url"], key, ta)

    def place_file(self, parent, name, existing, behavior, tmp, size, qxh, fs_m=None, fs_c=None):
        """Commit a finished upload; caller holds the lock.  Returns (status, node)."""
        if existing is not None and existing.id not in self.byid:
            existing = None
        existing = existing or parent.children.get(name.lower())
        if existing is not None and behavior == "fail":
            raise Reply(409, "nameAlreadyExists", "The specified item name already exists. Name: %s" % existing.name)
        if existing is not None and existing.folder and behavior == "replace":
            raise Reply(409, "nameAlreadyExists", "The specified item name already exists. Name: %s" % existing.name)
        blob = self.new_blob()
        os.replace(tmp, blob)
        if existing is not None and behavior == "replace":
            self.set_content(existing, blob, size, qxh, fs_m, fs_c)
            parent.version += 1
            return 200, existing
        if existing is not None:
            name = self.unique_name(parent, name)
        n = self.add_child(parent, name, False)
        self.set_content(n, blob, size, qxh, fs_m, fs_c)
        if fs_c is None:
            n.fs_created = n.created
        return 201, n

    def record(self, rec):
        with self.lock:
            self.seq += 1
            rec["seq"] = self.seq
            self.log.append(rec)
        if self.verbose:
            print("%(listener)s %(method)s %(target)s -> %(status)s" % rec, flush=True)


# ---------------------------------------------------------------- fault injection
FAULT_LISTENERS = ("login", "graph", "download", "upload", "any")
# one of these per rule (or none, for a rule of only date_skew and/or delay)
FAULT_ACTIONS = ("status", "drop_request_after", "lose_response", "drop_response_after", "truncate_chunked",
                 "stall", "trickle_head", "expire_session", "expire_token", "next_expected_ranges",
                 "endless_body")
FAULT_NEEDS = {"headers": "status", "body": "status", "retry_after_date": "status", "stall_after_bytes": "stall"}
FAULT_CODES = {      # status -> Graph error code, inner code (9.1, 9.2)
    400: ("invalidRequest", None), 401: ("InvalidAuthenticationToken", None), 403: ("accessDenied", None),
    404: ("itemNotFound", None), 409: ("nameAlreadyExists", None), 412: ("resourceModified", "entityTagDoesNotMatch"),
    413: ("requestEntityTooLarge", None), 416: ("invalidRange", "fragmentOverlap"), 423: ("resourceLocked", None),
    429: ("activityLimitReached", "throttledRequest"), 500: ("generalException", None), 502: ("BadGateway", None),
    503: ("serviceNotAvailable", None), 504: ("GatewayTimeout", None), 507: ("quotaLimitReached", None),
    509: ("bandwidthLimitExceeded", None)}
AAD_FAULT_CODES = {400: ("invalid_request", 90014), 401: ("invalid_client", 7000215), 429: ("temporarily_unavailable", 90033),
                   500: ("server_error", 50000), 503: ("temporarily_unavailable", 90033)}   # others: by class


class Faults:
    """Rules set by the control API (POST /faults) that make requests fail.
    A rule matches by listener, method and a regex on the raw target; its
    counter `seen` counts matching requests and it fires for the nth to the
    (nth + times - 1)th of them.  The first rule due to fire wins; every
    matching rule still counts the request."""
    def __init__(self):
        self.lock = threading.Lock()
        self.rules = []          # (rule dict as shown by GET /faults, compiled path regex or None)
        self.next_id = 1         # never reset: an id names one rule for the emulator's life

    @staticmethod
    def check(r):
        """A validated copy of rule r, and its regex; ValueError if r is bad."""
        if not isinstance(r, dict):
            raise ValueError("a rule must be a JSON object")
        num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
        count = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0
        kinds = {"listener": lambda v: v in FAULT_LISTENERS, "method": lambda v: isinstance(v, str) and v != "",
                 "path": lambda v: isinstance(v, str), "nth": lambda v: count(v) and v >= 1,
                 "times": lambda v: count(v) and v >= 1, "name": lambda v: isinstance(v, str),
                 "status": lambda v: isinstance(v, int) and not isinstance(v, bool) and 200 <= v <= 599,
                 "headers": lambda v: isinstance(v, dict) and all(isinstance(x, (str, int)) and "\n" not in str(x)
                                                                  and "\r" not in str(x) for x in list(v) + list(v.values())),
                 "body": lambda v: True, "retry_after_date": num,
                 "drop_request_after": count, "lose_response": lambda v: v is True, "drop_response_after": count,
                 "truncate_chunked": lambda v: v is True, "stall": lambda v: num(v) and v >= 0,
                 "stall_after_bytes": count, "trickle_head": lambda v: num(v) and v > 0,
                 "expire_session": lambda v: v is True, "expire_token": lambda v: v is True,
                 "next_expected_ranges": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
                 "endless_body": lambda v: num(v) and v > 0,
                 "date_skew": num, "delay": lambda v: num(v) and v >= 0, "rst": lambda v: isinstance(v, bool),
                 "ignore_range": lambda v: v is True}
        for k, v in r.items():
            if k not in kinds:
                raise ValueError("unknown rule field %r" % k)
            if not kinds[k](v):
                raise ValueError("bad value for %r: %r" % (k, v))
        acts = [k for k in FAULT_ACTIONS if k in r]
        if len(acts) > 1:
            raise ValueError("one action per rule, not %s" % ", ".join(acts))
        if not acts and not {"date_skew", "delay", "ignore_range"} & set(r):
            raise ValueError("no action (one of %s, or date_skew / delay / ignore_range)" % ", ".join(FAULT_ACTIONS))
        for k, need in FAULT_NEEDS.items():
            if k in r and need not in r:
                raise ValueError("%r needs %r" % (k, need))
        try:
            rx = re.compile(r["path"]) if "path" in r else None
        except re.error as e:
            raise ValueError("bad path regex: %s" % e)
        return dict(r), rx

    def add(self, rules):
        """Append rules (all or none); returns their ids."""
        if not isinstance(rules, list):
            raise ValueError("\"rules\" must be a list")
        checked = [self.check(r) for r in rules]
        with self.lock:
            for r, _ in checked:
                r.update(id=self.next_id, fired=0, seen=0)
                self.next_id += 1
            self.rules += checked
        return [r["id"] for r, _ in checked]

    def clear(self):
        with self.lock:
            self.rules = []

    def snapshot(self):
        with self.lock:
            return [dict(r) for r, _ in self.rules]

    def match(self, listener, method, target):
        """The rule to apply to this request (a copy), or None."""
        if not self.rules:
            return None
        chosen = None
        with self.lock:
            for r, rx in self.rules:
                if r.get("listener", "any") not in ("any", listener) or r.get("method", method) != method:
                    continue
                if rx is not None and not rx.search(target):
                    continue
                r["seen"] += 1
                nth = r.get("nth", 1)
                if chosen is None and nth <= r["seen"] < nth + r.get("times", 1):
                    r["fired"] += 1
                    chosen = dict(r)
        return chosen


class FaultCut(ClientGone):
    """Raised by FaultWriter to stop a handler once a fault has sent all it may."""


class FaultWriter:
    """Stands in for a handler's wfile while a response-side fault runs.  Its
    first write is the head (BaseHTTPRequestHandler writes the status line
    and headers at once); later writes are the body as framed on the wire.
      lose:   nothing is sent; the first body write raises FaultCut.
      budget: the head and the first `budget` body bytes are sent; a write
              beyond them sends what fits and raises FaultCut.
      chunks: the body goes out chunked (each write one chunk, if the
              handler did not frame it: `wrap`, set by Handler.send_header)
              and the final 0-chunk is held back.
      trickle: the head goes out a byte every `trickle` seconds (`stop`
              ends the wait); a client that hangs up raises FaultCut."""
    def __init__(self, real, lose=False, budget=None, chunks=False, trickle=None, stop=None):
        self.real, self.lose, self.budget, self.chunks = real, lose, budget, chunks
        self.trickle, self.stop = trickle, stop
        self.wrap, self.head_done, self.sent = False, False, 0

    def write(self, data):
        data = bytes(data)
        if not self.head_done:
            self.head_done = True
            if self.trickle:
                for i in range(len(data)):
                    if self.stop.wait(self.trickle):
                        raise FaultCut()
                    try:
                        self.real.write(data[i:i + 1])
                    except OSError:
                        raise FaultCut()
            elif not self.lose:
                self.real.write(data)
            return len(data)
        if not data:
            return 0
        if self.lose:
            raise FaultCut()
        if self.chunks:
            if self.wrap:
                self.real.write(b"%x\r\n" % len(data) + data + b"\r\n")
            elif data != b"0\r\n\r\n":
                self.real.write(data)
            return len(data)
        if self.budget is not None:
            room = self.budget - self.sent
            if len(data) > room:
                if room > 0:
                    self.real.write(data[:room])
                self.sent = self.budget
                raise FaultCut()
        self.real.write(data)
        self.sent += len(data)
        return len(data)

    def flush(self):
        pass


# ---------------------------------------------------------------- HTTP plumbing
class QuietServer(ThreadingHTTPServer):
    """A client that goes away mid-request (odcp killed by a test) is one
    line on stderr, not a traceback."""
    daemon_threads = True

    def handle_error(self, request, client_address):
        e = sys.exc_info()[1]
        print("fakegraph: connection from port %s ended: %s: %s" % (client_address[1], type(e).__name__, e),
              file=sys.stderr, flush=True)


class TLSServer(QuietServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, emu, listener, handler, ctx):
        self.emu, self.listener, self.ctx = emu, listener, ctx
        super().__init__(("127.0.0.1", 0), handler)
        self.public = None          # its real host name, with --public-hosts

    def host_ok(self, host, sni):
        """Host header and TLS SNI (if sent) must name this listener: its
        real name (port 443), or localhost / 127.0.0.1 with its port."""
        port = self.server_address[1]
        hosts = {"localhost", "127.0.0.1", "localhost:%d" % port, "127.0.0.1:%d" % port}
        snis = {"localhost"}
        if self.public:
            hosts |= {self.public, self.public + ":443"}
            snis.add(self.public)
        # under the real names a client must send SNI (the real hosts need
        # it to pick their certificate); on loopback it may not
        if self.public and sni is None:
            return False
        return host.strip().lower() in hosts and (sni is None or sni.lower() in snis)

    def finish_request(self, request, client_address):
        # The TLS handshake runs here, in the per-connection thread.
        request.settimeout(30)
        try:
            conn = self.ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            print("fakegraph: %s listener: TLS handshake failed: %s" % (self.listener, e), file=sys.stderr, flush=True)
            return
        try:
            self.RequestHandlerClass(conn, client_address, self)
        except (OSError, ssl.SSLError):
            pass
        finally:
            try:
                conn.settimeout(1)
                conn.unwrap()
            except (OSError, ssl.SSLError, ValueError):
                pass
            conn.close()


class Handler(BaseHTTPRequestHandler):
    """Common request plumbing: target checks, body handling, logging."""
    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-IIS/10.0"
    sys_version = ""
    timeout = 120
    extra_headers = {"Cache-Control": "no-store, no-cache", "Strict-Transport-Security": "max-age=31536000"}

    def log_message(self, fmt, *args):
        pass

    def log_request(self, code="-", size="-"):
        pass

    def version_string(self):
        return self.server_version

    def setup(self):
        super().setup()
        self.nreq = 0

    @property
    def emu(self):
        return self.server.emu

    @property
    def cfg(self):
        return self.server.emu.config

    def send_response(self, code, message=None):
        # Any unread request body is consumed first (so keep-alive stays in
        # sync and body_len is final), and the request is logged before the
        # response can reach the client: a test reading /log right after a
        # response always finds its record.
        if not self.body_done:
            self.drain()
        self.status = code
        super().send_response(code, message)
        self.send_header("request-id", self.request_id)
        self.send_header("client-request-id", self.client_request_id)
        if self.close_connection:
            self.send_header("Connection", "close")
        if not self.logged:
            self.log_request_record()

    def handle_one_request(self):
        self.status, self.body_read, self.body_len, self.body_done, self.logged = 0, 0, 0, True, False
        self.fault, self.fault_id, self.date_ts, self.t_head = None, None, None, None
        self.request_id = str(uuid.uuid4())
        self.client_request_id = self.request_id
        self.command, self.path, self.headers, self.requestline = None, "", None, ""
        try:
            raw = self.rfile.readline(65537)
        except (OSError, ssl.SSLError):
            self.close_connection = True
            return
        if not raw:
            self.close_connection = True
            return
        self.t_head = time.time()
        self.raw_requestline = raw
        parts = raw.rstrip(b"\r\n").split(b" ")
        if len(raw) > 65536 or (len(parts) >= 3 and parts[-1].startswith(b"HTTP/") and (
                len(parts) > 3 or any(c <= 0x20 or c >= 0x7F for c in parts[1]))):
            # What front ends do with a raw space / non-ASCII byte in the target.
            self.command = parts[0].decode("latin-1")
            self.path = b" ".join(parts[1:-1]).decode("latin-1")
            self.request_version = "HTTP/1.1"
            try:
                self.headers = http.client.parse_headers(self.rfile)
            except Exception:
                pass
            self.close_connection = True
            return self.send_raw(400, b"<h2>Bad Request - Invalid URL</h2><hr><p>HTTP Error 400. The request URL is invalid.</p>", "text/html; charset=us-ascii")
        if not self.parse_request():      # it has sent its own 400/505 (and logged)
            self.close_connection = True
            return
        self.t_head = time.time()
        self.nreq += 1
        self.client_request_id = self.headers.get("client-request-id", self.request_id)
        te = self.headers.get("Transfer-Encoding")
        cl = self.headers.get("Content-Length")
        limit = self.cfg.get("max_requests_per_connection") or 0
        if limit and self.nreq >= limit:
            self.close_connection = True
        html = "text/html; charset=us-ascii"
        try:
            if not self.headers.get("Host"):
                self.close_connection = True
                self.send_raw(400, b"<h2>Bad Request - Invalid Hostname</h2>", html)
            elif not self.server.host_ok(self.headers.get("Host"), getattr(self.connection, "sni", None)):
                self.close_connection = True      # another host's name: what HTTP.sys says
                self.send_raw(400, b"<h2>Bad Request - Invalid Hostname</h2>", html)
            elif te:
                self.close_connection = True   # request bodies must carry Content-Length (12)
                self.send_raw(411, b"<h2>Length Required</h2>", html)
            elif cl is not None and not cl.isdigit():
                self.close_connection = True
                self.send_raw(400, b"<h2>Bad Request - Invalid Content-Length</h2>", html)
            else:
                self.body_len = int(cl or 0)
                self.body_done = self.body_len == 0
                rule = self.emu.faults.match(self.server.listener, self.command, self.path)
                if rule is not None:
                    self.apply_fault(rule)
                else:
                    try:
                        self.dispatch()
                    except Reply as r:
                        self.send_error_json(r)
            if not self.body_done:
                self.drain()
        except (ClientGone, OSError, ssl.SSLError):
            self.close_connection = True
        if not self.logged:               # connection lost before a response
            self.log_request_record()

    def log_request_record(self):
        self.logged = True
        hdrs = {}
        if self.headers is not None:
            for k, v in self.headers.items():
                k = k.lower()
                v = "<redacted>" if k == "authorization" else v
                hdrs[k] = hdrs[k] + ", " + v if k in hdrs else v
        target = self.path or ""
        try:
            path = urllib.parse.unquote(target.split("?", 1)[0], errors="replace")
        except Exception:
            path = target
        rec = {"listener": self.server.listener, "method": self.command, "target": target,
               "path": path, "auth": "authorization" in hdrs, "headers": hdrs,
               "body_len": self.body_read, "status": self.status, "sni": getattr(self.connection, "sni", None),
               "t": self.t_head if self.t_head is not None else time.time()}
        if self.fault_id is not None:
            rec["fault"] = self.fault_id
        self.emu.record(rec)

    # ---- request bodies
    def read_chunks(self):
        left = self.body_len
        while left > 0:
            buf = self.rfile.read(min(left, 1 << 20))
            if not buf:
                raise ClientGone()
            left -= len(buf)
            self.body_read += len(buf)
            yield buf
        self.body_done = True

    def read_body(self, limit=1 << 20):
        if self.body_len > limit:
            raise Reply(413, "requestEntityTooLarge", "The request body is too large.")
        return b"".join(self.read_chunks())

    def read_body_to_file(self, f):
        for buf in self.read_chunks():
            f.write(buf)

    def drain(self):
        if self.body_len - self.body_read > DRAIN_LIMIT:
            self.close_connection = True
            return
        for _ in self.read_chunks():
            pass

    def read_json(self):
        raw = self.read_body()
        if not raw.strip():
            return None
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            obj = None
        if not isinstance(obj, dict):
            raise Reply(400, "BadRequest", "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.")
        return obj

    # ---- responses
    def send_raw(self, status, body, ctype, headers=None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if status not in (204, 304):
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD" and status not in (204, 304):
            self.wfile.write(body)

    def send_json(self, status, obj, chunked=False, headers=None, ctype=GRAPH_JSON):
        if self.fault is not None and "next_expected_ranges" in self.fault and isinstance(obj, dict) and "nextExpectedRanges" in obj:
            obj = dict(obj, nextExpectedRanges=list(self.fault["next_expected_ranges"]))
        body = json.dumps(obj, separators=(",", ":")).encode()    # ensure_ascii: non-ASCII as \u escapes
        h = dict(self.extra_headers)
        h.update(headers or {})
        if not chunked:
            return self.send_raw(status, body, ctype, h)
        self.send_response(status)
        for k, v in h.items():
            self.send_header(k, v)
        self.send_header("Content-Type", ctype)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        n = len(body)
        cuts = sorted({0, n} | ({n // 3, (2 * n) // 3 + 1} if n > 8 else set()))
        for a, b in zip(cuts, cuts[1:]):
            if b > a:
                self.wfile.write(b"%x\r\n" % (b - a))   # size line and data in
                self.wfile.write(body[a:b] + b"\r\n")   # separate TLS records
        self.wfile.write(b"0\r\n\r\n")

    def graph_error(self, status, code, message, inner=None, headers=None):
        ie = {}
        if inner:
            ie["code"] = inner
        ie.update({"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
                   "request-id": self.request_id, "client-request-id": self.client_request_id})
        self.send_json(status, {"error": {"code": code, "message": message, "innerError": ie}}, headers=headers)

    def send_error_json(self, r):
        self.graph_error(r.status, r.code, r.message, r.inner, r.headers)

    # ---- fault injection (Faults; POST /faults)
    def send_header(self, keyword, value):
        if self.fault is not None and self.fault.get("truncate_chunked") and keyword.lower() == "content-length":
            self.wfile.wrap = True        # the FaultWriter frames the body as chunks
            keyword, value = "Transfer-Encoding", "chunked"
        super().send_header(keyword, value)

    def date_time_string(self, timestamp=None):
        # One Date per response (IMF-fixdate), shifted by a date_skew fault.
        if timestamp is None:
            if self.date_ts is None:
                self.date_ts = int(time.time() + (self.fault or {}).get("date_skew", 0))
            timestamp = self.date_ts
        return super().date_time_string(timestamp)

    def apply_fault(self, rule):
        """Serve this request as the fault rule says (see Faults)."""
        self.fault, self.fault_id = rule, rule["id"]
        if rule.get("delay"):
            self.emu.stop.wait(rule["delay"])
        if rule.get("expire_token"):
            with self.emu.lock:
                for t in self.emu.access.values():
                    t["expires"] = 0
        if rule.get("expire_session"):
            m = re.fullmatch(r"/up/([A-Za-z0-9_-]+)", self.split_target()[0])
            with self.emu.lock:
                s = self.emu.sessions.pop(m.group(1), None) if m else None
            if s is not None:
                try:
                    os.unlink(s["tmp"])
                except OSError:
                    pass
        if "drop_request_after" in rule:
            left = min(rule["drop_request_after"], self.body_len)
            while left > 0:
                buf = self.rfile.read(min(left, 1 << 20))
                if not buf:
                    break
                left -= len(buf)
                self.body_read += len(buf)
            return self.abort(rule.get("rst", True))
        if "status" in rule:
            self.drain()
            return self.fault_status(rule)
        if "endless_body" in rule:
            self.drain()
            self.log_request_record()
            self.send_response(200)
            self.send_header("Content-Type", GRAPH_JSON)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            pad, end = b"%x\r\n%s\r\n" % (65536, b" " * 65536), time.time() + rule["endless_body"]
            try:
                self.wfile.write(b"1\r\n{\r\n")
                while time.time() < end and not self.emu.stop.is_set():
                    self.wfile.write(pad)
            except OSError:
                pass
            return self.abort(False)
        if "stall" in rule and "stall_after_bytes" not in rule:
            self.drain()
            self.log_request_record()     # no response will come
            self.emu.stop.wait(rule["stall"])
            return self.abort(rule.get("rst", False))
        real, writer = self.wfile, None
        if rule.get("lose_response"):
            writer = FaultWriter(real, lose=True)
        elif "drop_response_after" in rule or "stall_after_bytes" in rule:
            writer = FaultWriter(real, budget=rule.get("drop_response_after", rule.get("stall_after_bytes")))
        elif rule.get("truncate_chunked"):
            writer = FaultWriter(real, chunks=True)
        elif "trickle_head" in rule:
            writer = FaultWriter(real, trickle=rule["trickle_head"], stop=self.emu.stop)
        if writer is not None:
            self.wfile = writer
        try:
            try:
                self.dispatch()
            except Reply as r:
                self.send_error_json(r)
        except FaultCut:
            pass
        finally:
            self.wfile = real
        if writer is not None:
            if "stall" in rule:
                self.emu.stop.wait(rule["stall"])
            self.abort(rule.get("rst", False))

    def fault_status(self, rule):
        """The "status" action: a canned response (the request body was read
        and discarded; nothing else happens)."""
        status, ctype, extra = rule["status"], None, {}
        for k, v in (rule.get("headers") or {}).items():
            k, v = str(k), str(v)
            if k.lower() == "content-type":
                ctype = v
            elif k.lower() == "connection":
                self.close_connection = self.close_connection or v.strip().lower() == "close"
            else:
                extra[k] = v
        if "retry_after_date" in rule:
            extra = {k: v for k, v in extra.items() if k.lower() != "retry-after"}
            self.date_time_string()       # fixes this response's Date first
            extra["Retry-After"] = BaseHTTPRequestHandler.date_time_string(self, int(self.date_ts + rule["retry_after_date"]))
        if self.server.listener == "graph" and status == 401 and not any(k.lower() == "www-authenticate" for k in extra):
            extra["WWW-Authenticate"] = ('Bearer realm="", authorization_uri="%s/common/oauth2/authorize", '
                                         'client_id="00000003-0000-0000-c000-000000000000"' % self.emu.urls["login_url"])
        headers = {k: v for k, v in self.extra_headers.items() if k.lower() not in {x.lower() for x in extra}}
        headers.update(extra)
        if "body" in rule:
            b = rule["body"]
            if isinstance(b, str):
                return self.send_raw(status, b.encode(), ctype or "text/plain; charset=utf-8", headers)
            return self.send_raw(status, json.dumps(b, separators=(",", ":")).encode(), ctype or "application/json", headers)
        if status < 400:
            return self.send_raw(status, b"", ctype or "text/plain", headers)
        if self.server.listener == "login":
            err, num = AAD_FAULT_CODES.get(status) or (("temporarily_unavailable", 90033) if status >= 500 else ("invalid_request", 90014))
            now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
            trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
            obj = {"error": err, "error_description": "AADSTS%d: Injected fault.\r\nTrace ID: %s\r\nCorrelation ID: %s\r\nTimestamp: %s"
                   % (num, trace, corr, now), "error_codes": [num], "timestamp": now, "trace_id": trace, "correlation_id": corr,
                   "error_uri": "%s/error?code=%d" % (self.emu.urls["login_url"], num)}
            ctype = ctype or "application/json; charset=utf-8"
        else:
            code, inner = FAULT_CODES.get(status) or (("generalException", None) if status >= 500 else ("invalidRequest", None))
            if status == 404 and self.server.listener == "upload":
                inner = "uploadSessionNotFound"
            obj = {"error": {"code": code, "message": "Injected fault", "innerError": {
                "code": inner or code, "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": self.request_id, "client-request-id": self.client_request_id}}}
            ctype = ctype or GRAPH_JSON
        self.send_raw(status, json.dumps(obj, separators=(",", ":")).encode(), ctype, headers)

    def abort(self, rst=False):
        """End the connection abruptly, with no TLS close_notify: a FIN, or
        with rst an RST (SO_LINGER 0).  SSLSocket.shutdown drops the TLS
        layer, so the unwrap in TLSServer.finish_request then sends nothing."""
        self.close_connection, self.body_done = True, True
        c = self.connection
        try:
            if rst:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.shutdown(socket.SHUT_RD if rst else socket.SHUT_RDWR)
        except (OSError, ValueError):
            pass

    def split_target(self):
        t = self.path
        if t.startswith("https://") or t.startswith("http://"):   # absolute-form
            t = "/" + t.split("/", 3)[3] if t.count("/") >= 3 else "/"
        p, _, q = t.partition("?")
        return p, q


def parse_query(q):
    out = {}
    for part in q.split("&"):
        if part:
            k, _, v = part.partition("=")
            out[urllib.parse.unquote_plus(k)] = urllib.parse.unquote_plus(v)
    return out


# ---------------------------------------------------------------- identity platform (1.3-1.7)
class LoginHandler(Handler):
    def aad_error(self, status, error, code, desc, headers=None):
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
        self.send_json(status, {
            "error": error,
            "error_description": "AADSTS%d: %s\r\nTrace ID: %s\r\nCorrelation ID: %s\r\nTimestamp: %s" % (code, desc, trace, corr, now),
            "error_codes": [code], "timestamp": now, "trace_id": trace, "correlation_id": corr,
            "error_uri": "%s/error?code=%d" % (self.server.emu.urls["login_url"], code)},
            headers=headers, ctype="application/json; charset=utf-8")

    def dispatch(self):
        path, query = self.split_target()
        m = re.fullmatch(r"/([^/]+)/oauth2/v2\.0/(devicecode|token|authorize)", path)
        if path == "/devicelogin" and self.command == "GET":
            # the person "types the code": GET /devicelogin?code=CODE approves it
            code = parse_query(query).get("code", "")
            with self.emu.lock:
                for d in self.emu.devicecodes.values():
                    if code and d["user_code"] == code and d["state"] == "pending":
                        d["state"] = "approved"
                        return self.send_raw(200, b"fakegraph: code %s approved; odcp will finish signing in.\n"
                                             % code.encode(), "text/plain; charset=utf-8")
            if code:
                return self.send_raw(404, b"fakegraph: no pending sign-in has the code %s (mistyped, or already "
                                     b"used or expired?)\n" % code.encode("utf-8", "replace")[:64],
                                     "text/plain; charset=utf-8")
            return self.send_raw(200, b"fakegraph device login: open /devicelogin?code=CODE to approve CODE, "
                                 b"or use the control API: POST /approve {\"user_code\": CODE}\n",
                                 "text/plain; charset=utf-8")
        if re.fullmatch(r"/[^/]+/oauth2/nativeclient", path) and self.command == "GET":
            return self.send_raw(200, b"", "text/html; charset=utf-8")
        if not m:
            return self.send_raw(404, b"Not found\n", "text/plain")
        tenant, ep = urllib.parse.unquote(m.group(1)), m.group(2)
        if ep == "authorize":
            if self.command != "GET":
                return self.send_raw(405, b"", "text/plain")
            return self.authorize(tenant, parse_query(query))
        if self.command != "POST":
            return self.aad_error(400, "invalid_request", 900561, "The endpoint only accepts POST requests. Received a %s request." % self.command)
        raw = self.read_body()
        if not (self.headers.get("Content-Type") or "").lower().startswith("application/x-www-form-urlencoded"):
            raw = b""      # AAD reads only form bodies: everything looks missing
        try:
            form = {k: v[-1] for k, v in urllib.parse.parse_qs(raw.decode("ascii"), keep_blank_values=True, strict_parsing=bool(raw)).items()}
        except (ValueError, UnicodeDecodeError):
            return self.aad_error(400, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'.")
        with self.emu.lock:
            if ep == "devicecode":
                return self.devicecode(tenant, form)
            return self.token(tenant, form)

    def devicecode(self, tenant, form):
        for p in ("client_id", "scope"):
            if not form.get(p):
                return self.aad_error(400, "invalid_request", 900144, "The request body must contain the following parameter: '%s'." % p)
        c = self.cfg
        user_code = "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(9))
        dc = "DAQABIQEAAAB" + secrets.token_urlsafe(160)
        uri = self.emu.urls["login_url"] + "/devicelogin"
        interval = c["interval"]
        self.emu.devicecodes[dc] = {"user_code": user_code, "state": "pending", "client_id": form["client_id"],
                                    "scope": form["scope"], "tenant": tenant, "created": time.time(),
                                    "expires_in": c["device_expires_in"], "interval": interval, "polls": 0,
                                    "last_poll": None, "slowed": False, "expired_told": False}
        self.send_json(200, {"user_code": user_code, "device_code": dc, "verification_uri": uri,
                             "expires_in": int(c["device_expires_in"]),
                             "interval": int(interval) if float(interval).is_integer() else interval,
                             "message": "To sign in, use a web browser to open the page %s and enter the code %s to authenticate." % (uri, user_code)},
                       ctype="application/json; charset=utf-8")

    def token(self, tenant, form):
        gt = form.get("grant_type")
        if not gt:
            return self.aad_error(400, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'.")
        auth = self.headers.get("Authorization", "")
        if auth[:6].lower() == "basic ":     # client_secret_basic (RFC 6749 2.3.1; 1.6): id and secret
            try:                             # form-encoded, then base64; fills what the form lacks
                cid, _, sec = base64.b64decode(auth[6:].strip(), validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return self.aad_error(401, "invalid_client", 7000215, "Invalid client secret provided.")
            form.setdefault("client_id", urllib.parse.unquote_plus(cid))
            form.setdefault("client_secret", urllib.parse.unquote_plus(sec))
        if not form.get("client_id"):
            return self.aad_error(400, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'.")
        if gt == "client_credentials":
            return self.client_credentials(tenant, form)
        if gt not in ("refresh_token", "authorization_code", "urn:ietf:params:oauth:grant-type:device_code"):
            return self.aad_error(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type '%s'." % gt)
        secret = form.get("client_secret")
        if form["client_id"] in self.cfg["confidential_clients"].split():   # a web app (2.3)
            if not secret:
                return self.aad_error(401, "invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
            if secret != self.cfg["client_secret"]:
                return self.aad_error(401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '%s'." % form["client_id"])
        elif secret or form.get("client_assertion"):     # 1.1: public clients send none
            return self.aad_error(401, "invalid_client", 700025, "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.")
        if gt == "refresh_token":
            return self.refresh_grant(tenant, form)
        if gt == "authorization_code":
            return self.code_grant(tenant, form)
        return self.device_grant(tenant, form)

    def device_grant(self, tenant, form):
        now = time.time()
        d = self.emu.devicecodes.get(form.get("device_code", ""))
        if d is None or d["client_id"] != form["client_id"]:
            return self.aad_error(400, "bad_verification_code", 70018, "The provided value for the input parameter 'device_code' is not valid.")
        if d["tenant"].lower() != tenant.lower():
            return self.aad_error(400, "invalid_grant", 700005, "Provided Authorization Code is intended to use against other tenant, thus rejected.")
        d["polls"] += 1
        last, d["last_poll"] = d["last_poll"], now
        if d["state"] == "redeemed":
            return self.aad_error(400, "invalid_grant", 70000, "The provided value for the 'device_code' is not valid. It was already redeemed.")
        if now > d["created"] + d["expires_in"] and d["state"] != "approved":
            if d["expired_told"]:      # RFC servers may follow up with invalid_grant (1.3)
                return self.aad_error(400, "invalid_grant", 70019, "Verification code expired.")
            d["expired_told"] = True
            return self.aad_error(400, "expired_token", 70019, "Verification code expired.")
        if d["state"] == "denied":
            return self.aad_error(400, "authorization_declined", 70000, "The user declined the authorization request.")
        n = self.cfg["auto_approve"]
        if d["state"] == "pending" and n and d["polls"] >= n:
            d["state"] = "approved"
        if d["state"] == "approved":
            d["state"] = "redeemed"
            return self.issue(d["client_id"], d["scope"], tenant)
        if last is not None and now - last < d["interval"] - 0.5 and not d["slowed"]:
            d["slowed"] = True
            return self.aad_error(400, "slow_down", 70016, "OAuth 2.0 device flow error. Polling too frequently, slow down.")
        return self.aad_error(400, "authorization_pending", 70016, "OAuth 2.0 device flow error. Authorization is pending. Continue polling.")

    def refresh_grant(self, tenant, form):
        rt = form.get("refresh_token", "")
        r = self.emu.refresh.get(rt)
        if not rt:
            return self.aad_error(400, "invalid_request", 900144, "The request body must contain the following parameter: 'refresh_token'.")
        if r is None:
            return self.aad_error(400, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
        if not r["valid"] or r["client_id"] != form["client_id"]:
            return self.aad_error(400, "invalid_grant", 70000, "The provided value for the 'refresh_token' is not valid. The refresh token has already been used or revoked.")
        scope = form.get("scope") or r["scope"]
        granted = {s.rsplit("/", 1)[-1].lower() for s in r["scope"].split()}
        asked = {s.rsplit("/", 1)[-1].lower() for s in scope.split()}
        if not asked <= granted | {"offline_access", "openid", "profile", "email"} and ".default" not in granted:
            return self.aad_error(400, "invalid_grant", 65001, "The user or administrator has not consented to use the application.")
        if self.cfg["strict_rotation"]:
            r["valid"] = False
        # A refresh always yields a refresh token (the original grant had offline_access).
        if "offline_access" not in asked:
            scope += " offline_access"
        return self.issue(r["client_id"], scope, tenant)

    def authorize(self, tenant, q):
        redirect = q.get("redirect_uri", "")
        ok = re.match(r"(https://[^/?#]+|http://(localhost|127\.0\.0\.1)(:\d+)?)(/|$)", redirect)
        if not q.get("client_id") or not ok:
            return self.send_raw(400, b"AADSTS50011: The redirect URI specified in the request does not match the redirect URIs configured for the application.", "text/plain")

        def back(params):
            sep = "#" if q.get("response_mode") == "fragment" else ("&" if "?" in redirect else "?")
            if "state" in q:
                params["state"] = q["state"]
            self.send_raw(302, b"", "text/html", {"Location": redirect + sep + urllib.parse.urlencode(params)})

        if q.get("response_type") != "code":
            return back({"error": "unsupported_response_type", "error_description": "AADSTS700054: response_type 'code' is required."})
        if not q.get("scope"):
            return back({"error": "invalid_request", "error_description": "AADSTS900144: The request body must contain the following parameter: 'scope'."})
        ch = q.get("code_challenge", "")
        if q.get("code_challenge_method") != "S256" or not re.fullmatch(r"[A-Za-z0-9_-]{43}", ch):
            return back({"error": "invalid_request", "error_description": "AADSTS501491: Invalid size of Code_Challenge parameter or code_challenge_method is not S256."})
        code = "1.AQ" + secrets.token_urlsafe(300)
        with self.emu.lock:
            self.emu.authcodes[code] = {"client_id": q["client_id"], "redirect_uri": redirect, "challenge": ch,
                                        "scope": q["scope"], "tenant": tenant, "created": time.time(), "used": False}
        back({"code": code, "session_state": str(uuid.uuid4())})

    def code_grant(self, tenant, form):
        a = self.emu.authcodes.get(form.get("code", ""))
        if a is None:
            return self.aad_error(400, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
        if a["used"]:
            return self.aad_error(400, "invalid_grant", 54005, "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.")
        if time.time() - a["created"] > 600:
            return self.aad_error(400, "invalid_grant", 70008, "The provided authorization code or refresh token has expired due to inactivity.")
        if a["client_id"] != form["client_id"]:
            return self.aad_error(400, "invalid_grant", 70002, "The authorization code was issued to a different client.")
        if a["tenant"].lower() != tenant.lower():
            return self.aad_error(400, "invalid_grant", 700005, "Provided Authorization Code is intended to use against other tenant, thus rejected.")
        if form.get("redirect_uri") != a["redirect_uri"]:
            return self.aad_error(400, "invalid_grant", 50148, "The redirect_uri does not match the redirect_uri used to obtain the authorization code.")
        v = form.get("code_verifier", "")
        digest = base64.urlsafe_b64encode(hashlib.sha256(v.encode()).digest()).rstrip(b"=").decode()
        if not re.fullmatch(r"[A-Za-z0-9._~-]{43,128}", v) or digest != a["challenge"]:
            return self.aad_error(400, "invalid_grant", 501481, "The Code_Verifier does not match the code_challenge supplied in the authorization request.")
        a["used"] = True
        return self.issue(a["client_id"], a["scope"], tenant)

    def client_credentials(self, tenant, form):
        if tenant.lower() in ("common", "organizations", "consumers"):
            return self.aad_error(400, "invalid_request", 9001023, "The grant type is not supported over the /common or /consumers endpoints. Please use the /organizations or tenant-specific endpoint.")
        secret = form.get("client_secret")      # from the form or a Basic header (token())
        if not secret:
            return self.aad_error(401, "invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
        if secret != self.cfg["client_secret"]:
            return self.aad_error(401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '%s'." % form["client_id"])
        scope = form.get("scope", "")
        if len(scope.split()) != 1 or not scope.endswith("/.default"):
            return self.aad_error(400, "invalid_scope", 70011, "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope %s is not valid." % scope)
        return self.issue(form["client_id"], scope, tenant, app_only=True)

    def issue(self, client_id, scope, tenant, app_only=False):
        emu, life = self.emu, int(self.cfg["token_lifetime"])
        at = "EwB" + secrets.token_urlsafe(1100)          # opaque, not a JWT (1.7)
        scopes = scope.split()
        emu.access[at] = {"expires": time.time() + life, "app_only": app_only, "client_id": client_id,
                          "scopes": {s.rsplit("/", 1)[-1].lower() for s in scopes}}
        emu.access_count += 1
        out = {"token_type": "Bearer"}
        if not app_only:
            shown = [s for s in scopes if s.lower() not in ("offline_access", "openid", "profile", "email")]
            out["scope"] = " ".join(shown + ["openid", "profile", "email"])
        out.update({"expires_in": life, "ext_expires_in": life, "access_token": at})
        if not app_only and "offline_access" in {s.lower() for s in scopes}:
            rt = "M.C5" + secrets.token_urlsafe(500)
            emu.refresh[rt] = {"client_id": client_id, "scope": scope, "valid": True}
            emu.refresh_issued.append(rt)
            out["refresh_token"] = rt
        self.send_json(200, out, ctype="application/json; charset=utf-8",
                       headers={"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"})


# ---------------------------------------------------------------- Graph (3-9, 11)
class GraphHandler(Handler):
    extra_headers = dict(Handler.extra_headers, **{"OData-Version": "4.0",
                         "x-ms-ags-diagnostic": '{"ServerInfo":{"DataCenter":"Emulator","Slice":"E","Ring":"1"}}'})

    def dispatch(self):
        path, query = self.split_target()
        self.query = parse_query(query)
        self.rawquery = query
        if not path.startswith("/v1.0/"):
            raise Reply(400, "BadRequest", "Invalid version.")
        tok = self.authenticate()
        rest = path[len("/v1.0"):]
        m = re.match(r"/(me|drives/([^/:]+)|users/([^/:]+))(/drive\b)?", rest)
        if not m:
            seg = rest.strip("/").split("/")[0]
            raise Reply(400, "BadRequest", "Resource not found for the segment '%s'." % seg)
        if m.group(1) == "me" and tok["app_only"]:
            raise Reply(400, "BadRequest", "/me request is only valid with delegated authentication flow.")
        if m.group(3) is not None:
            upn = urllib.parse.unquote(m.group(3)).lower()
            if upn not in (USER["upn"], USER["id"]):
                raise Reply(404, "Request_ResourceNotFound", "Resource '%s' does not exist or one of its queried reference-property objects are not present." % urllib.parse.unquote(m.group(3)))
        if m.group(2) is not None:
            if urllib.parse.unquote(m.group(2)) != DRIVE_ID:
                raise Reply(404, "itemNotFound", "The resource could not be found.")
            tail = rest[m.end(1):]
        elif m.group(4):
            tail = rest[m.end(4):]
        else:
            tail = rest[m.end(1):]
            if tail in ("", "/") and self.command == "GET":
                return self.get_user(tok)
            if m.group(1) == "me" and tail == "/drives" and self.command == "GET":
                return self.send_json(200, {"@odata.context": self.emu.urls["graph_url"] + "/$metadata#drives", "value": [self.emu.drive_json()]}, chunked=True)
            seg = tail.strip("/").split("/")[0]
            raise Reply(400, "BadRequest", "Resource not found for the segment '%s'." % seg)
        self.check_scope(tok, self.command not in ("GET", "HEAD"))
        if tail in ("", "/"):
            if self.command != "GET":
                raise Reply(405, "BadRequest", "The HTTP method '%s' is not allowed." % self.command)
            return self.send_json(200, self.emu.drive_json(), chunked=True)
        return self.item_request(tail)

    def authenticate(self):
        auth = self.headers.get("Authorization", "")
        hdr = {"WWW-Authenticate": 'Bearer realm="", authorization_uri="%s/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"' % self.emu.urls["login_url"]}
        if not auth:
            raise Reply(401, "InvalidAuthenticationToken", "Access token is empty.", headers=hdr)
        scheme, _, tok = auth.partition(" ")
        with self.emu.lock:
            t = self.emu.access.get(tok.strip()) if scheme.lower() == "bearer" else None
        if t is None or time.time() >= t["expires"]:
            raise Reply(401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid.", headers=hdr)
        return t

    def check_scope(self, tok, write):
        if tok["app_only"] or ".default" in tok["scopes"]:
            return
        files = {s for s in tok["scopes"] if s.startswith("files.") or s.startswith("sites.")}
        if not files or (write and not any("readwrite" in s for s in files)):
            raise Reply(403, "accessDenied", "Access denied", headers={})

    def get_user(self, tok):
        if not tok["app_only"] and not tok["scopes"] & {"user.read", "user.readbasic.all", "user.read.all", ".default"}:
            raise Reply(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
        self.send_json(200, {"@odata.context": self.emu.urls["graph_url"] + "/$metadata#users/$entity",
                             "businessPhones": [], "displayName": USER["displayName"], "givenName": "Adele",
                             "mail": USER["upn"], "surname": "Vance", "userPrincipalName": USER["upn"], "id": USER["id"]}, chunked=True)

    def wants_download_url(self):
        """False when $select leaves the download URL out (the select()
        rules below), so a listing need not mint one per item."""
        sel = self.query.get("$select", self.query.get("select"))
        if sel is None:
            return True
        want = {s.strip().lower() for s in sel.split(",")}
        return "content.downloadurl" in want or ("select" in self.query and "@microsoft.graph.downloadurl" in want)

    def select(self, d):
        sel = self.query.get("$select", self.query.get("select"))
        if sel is None:
            return d
        want = {s.strip().lower() for s in sel.split(",")}
        out = {k: v for k, v in d.items() if k.lower() in want or k == "id"}
        url = d.get("@microsoft.graph.downloadUrl")
        # 4.1 pitfall: only select= (no $) or content.downloadUrl yields the URL.
        if url and ("content.downloadurl" in want or ("select" in self.query and "@microsoft.graph.downloadurl" in want)):
            out["@microsoft.graph.downloadUrl"] = url
        else:
            out.pop("@microsoft.graph.downloadUrl", None)
        return out

    # ---- addressing (3.2, 3.3)
    def item_request(self, tail):
        m = re.match(r"/(root|items/([^/:]+))", tail)
        if not m:
            seg = tail.strip("/").split("/")[0]
            raise Reply(400, "BadRequest", "Resource not found for the segment '%s'." % seg)
        base_id = urllib.parse.unquote(m.group(2)) if m.group(2) else "root"
        rest = tail[m.end():]
        segments = []
        if rest.startswith(":"):
            end = rest.find(":", 1)
            praw, rest = (rest[1:], "") if end < 0 else (rest[1:end], rest[end + 1:])
            if not praw.startswith("/"):
                raise Reply(400, "invalidRequest", "Invalid path: the path must start with '/' after ':'.")
            parts = praw[1:].split("/")
            if parts and parts[-1] == "":
                parts.pop()                       # tolerate one trailing slash
            for p in parts:
                try:
                    seg = urllib.parse.unquote(p, errors="strict")   # "+" stays a plus
                except UnicodeDecodeError:
                    raise Reply(400, "invalidRequest", "The path is not valid UTF-8.", "invalidPath")
                prob = name_problem(seg) or (("invalidPath", "Invalid path segment.") if seg in (".", "..") else None)
                if prob:
                    raise Reply(400, "invalidRequest", prob[1], prob[0])
                segments.append(seg)
        if rest in ("", "/"):
            sub = None
        elif re.fullmatch(r"/(children|content|createUploadSession)", rest):
            sub = rest[1:]
        else:
            raise Reply(400, "BadRequest", "Resource not found for the segment '%s'." % rest.strip("/").split("/")[0])
        with self.emu.lock:
            base = self.emu.root if base_id == "root" else self.emu.byid.get(base_id)
            if base is None:
                raise Reply(404, "itemNotFound", "The resource could not be found.")
            node, parent, last = self.emu.resolve(base, segments)
            if not segments:
                parent = base.parent
        ctx = {"node": node, "parent": parent, "name": last if segments else (base.name if base.parent else None)}
        method = self.command
        routes = {(None, "GET"): self.get_item, (None, "DELETE"): self.delete_item, (None, "PATCH"): self.patch_item,
                  ("children", "GET"): self.list_children, ("children", "POST"): self.create_folder,
                  ("content", "GET"): self.get_content, ("content", "PUT"): self.simple_upload,
                  ("createUploadSession", "POST"): self.create_session}
        fn = routes.get((sub, method))
        if fn is None:
            raise Reply(405, "BadRequest", "The HTTP method '%s' is not allowed for this resource." % method)
        return fn(ctx)

    def need(self, node):
        if node is None:
            raise Reply(404, "itemNotFound", "The resource could not be found.")
        return node

    def check_if_match(self, n):
        im = self.headers.get("If-Match")
        if im and im != "*" and im not in ('"{%s},%d"' % (n.etag_guid, n.version), '"c:{%s},%d"' % (n.etag_guid, n.version)):
            raise Reply(412, "resourceModified", "ETag does not match current item's value", "entityTagDoesNotMatch")

    # ---- metadata, listing (4)
    def get_item(self, ctx):
        with self.emu.lock:
            n = self.need(ctx["node"])
            inm = self.headers.get("If-None-Match")
            if inm and inm in ('"{%s},%d"' % (n.etag_guid, n.version), '"c:{%s},%d"' % (n.etag_guid, n.version)):
                return self.send_raw(304, b"", "")
            d = self.emu.item_json(n)
        d = dict({"@odata.context": self.emu.urls["graph_url"] + "/$metadata#drives('%s')/items/$entity" % DRIVE_ID}, **self.select(d))
        self.send_json(200, d, chunked=True)

    def list_children(self, ctx):
        top = self.query.get("$top", self.query.get("top"))
        if top is not None:
            if not top.isdigit() or int(top) < 1:
                raise Reply(400, "invalidRequest", "Invalid value for $top: '%s'." % top)
            size = min(int(top), 1000)
        else:
            size = max(1, int(self.cfg["page_size"]))
        after = None
        tokstr = self.query.get("$skiptoken", self.query.get("skiptoken"))
        if tokstr is not None:
            try:
                after = urllib.parse.parse_qs(base64.b64decode(tokstr, validate=True).decode(), strict_parsing=True)["p_FileLeafRef"][0]
            except Exception:
                raise Reply(400, "invalidRequest", "Invalid skip token.")
        with self.emu.lock:
            n = self.need(ctx["node"])
            kids, keys = self.emu.sorted_children(n)
            start = bisect.bisect_right(keys, (after.lower(), after)) if after is not None else 0
            page, more = kids[start:start + size], len(kids) > start + size
            url = self.wants_download_url()
            value = [self.select(self.emu.item_json(c, with_url=url)) for c in page]
        out = {"@odata.context": self.emu.urls["graph_url"] + "/$metadata#drives('%s')/items('%s')/children" % (DRIVE_ID, n.id), "value": value}
        if more:
            raw = "Paged=TRUE&p_SortBehavior=1&p_FileLeafRef=%s&p_ID=%d" % (urllib.parse.quote(page[-1].name), len(page))
            raw += "&p_Pad=" + "x" * ((1 - len(raw) - 7) % 3)   # base64 ends "==": the link always holds %3D
            skip = urllib.parse.quote(base64.b64encode(raw.encode()).decode(), safe="")
            keep = [p for p in self.rawquery.split("&") if p and not re.match(r"(\$|%24)?(top|skiptoken)=", p, re.I)]
            path = self.split_target()[0]
            out["@odata.nextLink"] = "%s%s?%s" % (self.emu.urls["graph_url"][:-len("/v1.0")], path,
                                                   "&".join(keep + ["$top=%d" % size, "$skiptoken=" + skip]))
        self.send_json(200, out, chunked=True)

    # ---- download (5.1)
    def get_content(self, ctx):
        with self.emu.lock:
            n = self.need(ctx["node"])
            if n.folder:   # reference silent; we answer as for a missing content stream
                raise Reply(404, "itemNotFound", "The resource could not be found.")
        self.send_raw(302, b"", "text/plain", {"Location": self.emu.download_url(n), "Cache-Control": "no-cache"})

    # ---- upload helpers
    def conflict_param(self, body=None, default="replace"):
        v = None
        if body is not None:
            v = body.get("@microsoft.graph.conflictBehavior", body.get("@name.conflictBehavior"))
        if v is None:
            v = self.query.get("@microsoft.graph.conflictBehavior", self.query.get("@name.conflictBehavior"))
        v = default if v is None else v
        if v not in ("fail", "replace", "rename"):
            raise Reply(400, "invalidRequest", "Invalid conflict behavior '%s'." % v)
        return v

    def target_for_upload(self, ctx):
        """(parent, name, existing) for a file upload target; caller holds the lock."""
        n, parent, name = ctx["node"], ctx["parent"], ctx["name"]
        if parent is None or parent.id not in self.emu.byid or not parent.folder:
            raise Reply(404, "itemNotFound", "The resource could not be found.")
        if n is not None and n.folder:
            raise Reply(409, "nameAlreadyExists", "The specified item name already exists. Name: %s" % n.name)
        self.check_create_name(parent, name, folder=False)
        return parent, name, n

    def check_create_name(self, parent, name, folder):
        prob = name_problem(name) or create_problem(name, folder)
        if prob:
            raise Reply(400, "invalidRequest", prob[1], prob[0])
        if len(parent.path().rstrip("/") + "/" + name) > 400:
            raise Reply(400, "invalidRequest", "The path is too long.", "pathIsTooLong")

    # ---- simple upload (6)
    def simple_upload(self, ctx):
        behavior = self.conflict_param()
        if self.headers.get("Content-Length") is None:
            raise Reply(411, "invalidRequest", "Length Required")
        if self.body_len > self.cfg["simple_upload_max"]:
            raise Reply(413, "requestEntityTooLarge", "The request is larger than the maximum allowed for a simple upload; use an upload session.")
        with self.emu.lock:
            # Missing parent folders: the reference does not say that PUT-by-path
            # creates them, so nothing is created and the answer is 404.
            self.target_for_upload(ctx)
        tmp = os.path.join(self.emu.tmpdir, secrets.token_hex(16))
        try:
            with open(tmp, "wb") as f:
                self.read_body_to_file(f)
            qxh = qxh_file(tmp)
            with self.emu.lock:
                parent, name, existing = self.target_for_upload(ctx)
                if existing is not None:
                    self.check_if_match(existing)
                status, n = self.emu.place_file(parent, name, existing, behavior, tmp, self.body_len, qxh)
                d = self.emu.item_json(n, upload=True)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self.send_json(status, d)

    # ---- upload session creation (7.1)
    def create_session(self, ctx):
        body = self.read_json() or {}
        item = body.get("item") or {}
        if not isinstance(item, dict):
            raise Reply(400, "invalidRequest", "Invalid 'item'.")
        # 7.1 [CONFLICT]: documented default 'fail', observed 'replace'; we use replace.
        behavior = self.conflict_param(item)
        fs = item.get("fileSystemInfo") or {}
        try:
            fs_m = parse_iso(fs["lastModifiedDateTime"]) if fs.get("lastModifiedDateTime") else None
            fs_c = parse_iso(fs["createdDateTime"]) if fs.get("createdDateTime") else None
        except ValueError:
            raise Reply(400, "invalidRequest", "Invalid fileSystemInfo timestamp.")
        with self.emu.lock:
            parent, name, existing = self.target_for_upload(ctx)
            if "name" in item and item["name"] != name:
                raise Reply(400, "invalidRequest", "Name specified in the path doesn't match the name specified in the request body.")
            if existing is not None and behavior == "fail":
                raise Reply(409, "nameAlreadyExists", "The specified item name already exists. Name: %s" % existing.name)
            if self.cfg["one_session_per_item"] and any(
                    o["parent"] is parent and o["name"].lower() == name.lower() and o["expires"] > time.time()
                    for o in self.emu.sessions.values()):
                raise Reply(409, "nameAlreadyExists", "An upload session already exists for this file")
            key, ta = secrets.token_urlsafe(24), secrets.token_urlsafe(1100)
            s = {"parent": parent, "name": name, "existing": existing, "behavior": behavior, "fs_m": fs_m,
                 "fs_c": fs_c, "total": None, "next": 0, "tempauth": ta, "defer": bool(body.get("deferCommit")),
                 "tmp": os.path.join(self.emu.tmpdir, "up-" + key), "expires": time.time() + self.cfg["upload_session_lifetime"],
                 "lock": threading.Lock()}
            open(s["tmp"], "wb").close()
            self.emu.sessions[key] = s
        self.send_json(200, {"@odata.context": self.emu.urls["graph_url"] + "/$metadata#microsoft.graph.uploadSession",
                             "uploadUrl": "%s/up/%s?tempauth=%s" % (self.emu.urls["upload_url"], key, ta),
                             "expirationDateTime": iso(s["expires"]), "nextExpectedRanges": ["0-"]})

    # ---- folders, delete, patch (8)
    def create_folder(self, ctx):
        body = self.read_json()
        if body is None:
            raise Reply(400, "BadRequest", "Empty Payload. JSON content expected.")
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise Reply(400, "invalidRequest", "The name is missing.")
        if "folder" not in body:
            raise Reply(400, "invalidRequest", "A folder or file facet is required when creating an item.")
        behavior = self.conflict_param(body, default="fail")
        with self.emu.lock:
            parent = self.need(ctx["node"])
            if not parent.folder:
                raise Reply(400, "invalidRequest", "The parent item is not a folder.")
            self.check_create_name(parent, name, folder=True)
            old = parent.children.get(name.lower())
            if old is not None:
                if behavior == "fail":
                    raise Reply(409, "nameAlreadyExists", "The specified item name already exists. Name: %s" % old.name)
                if behavior == "rename":
                    name = self.emu.unique_name(parent, name)
                else:
                    self.emu.remove(old)
            n = self.emu.add_child(parent, name, True)
            d = self.emu.item_json(n)
        self.send_json(201, d)

    def delete_item(self, ctx):
        with self.emu.lock:
            n = self.need(ctx["node"])
            if n.parent is None:
                raise Reply(403, "accessDenied", "Access denied. The root folder cannot be deleted.")
            self.check_if_match(n)
            self.emu.remove(n)
        self.send_raw(204, b"", "")

    def patch_item(self, ctx):
        body = self.read_json() or {}
        with self.emu.lock:
            n = self.need(ctx["node"])
            self.check_if_match(n)
            fs = body.get("fileSystemInfo") or {}
            try:
                if fs.get("lastModifiedDateTime"):
                    n.fs_modified = parse_iso(fs["lastModifiedDateTime"])
                if fs.get("createdDateTime"):
                    n.fs_created = parse_iso(fs["createdDateTime"])
            except ValueError:
                raise Reply(400, "invalidRequest", "Invalid fileSystemInfo timestamp.")
            # rename, and move by parentReference.id (driveItem-move; the
            # reference is silent, rclone's server-side move relies on it)
            dest, name = n.parent, body.get("name", n.name)
            ref = body.get("parentReference") or {}
            if not isinstance(name, str) or not isinstance(ref, dict):
                raise Reply(400, "invalidRequest", "Invalid request body.")
            if ref.get("id") is not None and n.parent is not None:
                if ref.get("driveId") not in (None, DRIVE_ID):
                    raise Reply(400, "invalidRequest", "Moving items between drives is not supported.")
                dest = self.emu.root if ref["id"] == "root" else self.emu.byid.get(ref["id"])
                if dest is None:
                    raise Reply(404, "itemNotFound", "The resource could not be found.")
                if not dest.folder:
                    raise Reply(400, "invalidRequest", "The destination is not a folder.")
                p = dest
                while p is not None:
                    if p is n:
                        raise Reply(400, "invalidRequest", "An item cannot be moved into itself or its descendants.")
                    p = p.parent
            if n.parent is not None and (name != n.name or dest is not n.parent):
                self.check_create_name(dest, name, n.folder)
                clash = dest.children.get(name.lower())
                if clash is not None and clash is not n:
                    raise Reply(409, "nameAlreadyExists", "The specified item name already exists.")
                del n.parent.children[n.name.lower()]
                n.parent.version += 1
                n.name, n.parent = name, dest
                dest.children[name.lower()] = n
                dest.version += 1
            n.version += 1
            n.modified = time.time()
            d = self.emu.item_json(n)
        self.send_json(200, d)


# ---------------------------------------------------------------- download host (5.2, 5.3)
class DownloadHandler(Handler):
    def dispatch(self):
        path, query = self.split_target()
        m = re.fullmatch(r"/dl/([A-Za-z0-9_-]+)", path)
        q = parse_query(query)
        with self.emu.lock:
            d = self.emu.downloads.get(m.group(1)) if m else None
            if d is None:
                raise Reply(404, "itemNotFound", "The resource could not be found.")
            if self.headers.get("Authorization") and not self.cfg["allow_bearer_on_preauth"]:   # 5.1: bearer leaked here
                raise Reply(401, "unauthenticated", "Unauthenticated: an Authorization header is not accepted on a pre-authenticated URL.")
            if q.get("tempauth") != d["tempauth"] or time.time() > d["expires"]:
                raise Reply(401, "unauthenticated", "The access token has expired. It's valid from the time it was issued until %s." % iso(d["expires"]), "expiredToken")
            n = self.emu.byid.get(d["id"])
            if n is None or n.folder:
                raise Reply(404, "itemNotFound", "The resource could not be found.")
            if self.command not in ("GET", "HEAD"):
                raise Reply(405, "notSupported", "Method not allowed.")
            f = open(n.blob, "rb")        # an open file survives a concurrent replace
            size, etag, mime, name = n.size, '"{%s},%d"' % (n.etag_guid, n.version), n.mime, n.name
        with f:
            start, end, status = 0, size - 1, 200
            rng = None if (self.fault or {}).get("ignore_range") else self.headers.get("Range")
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip()) if rng else None
            if m and (m.group(1) or m.group(2)):      # other forms (multi-range): ignore Range, send 200
                if m.group(1):
                    start = int(m.group(1))
                    end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                else:
                    start = max(0, size - int(m.group(2)))
                if start >= size or start > end:
                    return self.send_raw(416, b"", "text/plain", {"Content-Range": "bytes */%d" % size})
                status = 206
            length = end - start + 1 if size else 0
            self.send_response(status)
            self.send_header("Content-Type", mime)
            self.send_header("Content-Length", str(length))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", etag)
            self.send_header("Content-Disposition", "attachment; filename*=UTF-8''" + urllib.parse.quote(name))
            if status == 206:
                self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
            self.end_headers()
            if self.command == "HEAD":
                return
            f.seek(start)
            left = length
            while left > 0:
                buf = f.read(min(left, 1 << 20))
                if not buf:
                    raise ClientGone()
                self.wfile.write(buf)
                left -= len(buf)


# ---------------------------------------------------------------- upload host (7.2-7.5)
class UploadHandler(Handler):
    def dispatch(self):
        path, query = self.split_target()
        m = re.fullmatch(r"/up/([A-Za-z0-9_-]+)", path)
        q = parse_query(query)
        with self.emu.lock:
            key = m.group(1) if m else None
            s = self.emu.sessions.get(key)
            if s is not None and time.time() > s["expires"]:
                self.emu.sessions.pop(key, None)
                self.discard(s)
                s = None
        if self.headers.get("Authorization") and not self.cfg["allow_bearer_on_preauth"]:   # 7.2: never send it here
            raise Reply(401, "unauthenticated", "Authorization header is not allowed on an upload URL.")
        if s is None:
            raise Reply(404, "itemNotFound", "The upload session was not found.", "uploadSessionNotFound")
        if q.get("tempauth") != s["tempauth"]:
            raise Reply(401, "unauthenticated", "Invalid tempauth token.", "invalidToken")
        if self.command == "GET":
            return self.send_json(200, self.status_json(s))
        if self.command == "DELETE":
            with self.emu.lock:
                self.emu.sessions.pop(key, None)
            self.discard(s)
            return self.send_raw(204, b"", "")
        if self.command == "POST" and s["defer"] and s["total"] is not None and s["next"] == s["total"]:
            return self.commit(key, s)
        if self.command != "PUT":
            raise Reply(405, "notSupported", "Method not allowed.")
        return self.put_fragment(key, s)

    def status_json(self, s):
        ranges = [] if s["total"] is not None and s["next"] >= s["total"] else ["%d-" % s["next"]]
        return {"expirationDateTime": iso(s["expires"]), "nextExpectedRanges": ranges}

    def discard(self, s):
        try:
            os.unlink(s["tmp"])
        except OSError:
            pass

    def put_fragment(self, key, s):
        if self.headers.get("Content-Length") is None:
            raise Reply(411, "invalidRequest", "Length Required")
        m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", (self.headers.get("Content-Range") or "").strip())
        if not m or self.body_len == 0:
            raise Reply(400, "invalidRequest", "The Content-Range header is missing or malformed.")
        a, b, total = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if b < a or b >= total or b - a + 1 != self.body_len:
            raise Reply(400, "invalidRequest", "The Content-Range header length does not match the provided number of bytes.")
        if total > MAX_FILE:
            raise Reply(400, "invalidRequest", "The file is larger than the maximum allowed size.", "maxFileSizeExceeded")
        if self.body_len >= MAX_FRAGMENT:
            raise Reply(413, "requestEntityTooLarge", "The fragment is larger than the maximum allowed.", "maxFragmentLengthExceeded")
        if not s["lock"].acquire(blocking=False):   # fragments must be sequential
            raise Reply(409, "invalidRequest", "Another fragment is being uploaded to this session.")
        try:
            if s["total"] is not None and total != s["total"]:
                raise Reply(400, "invalidRequest", "The Content-Range total length does not match the previously declared total.", "fragmentLengthMismatch")
            if s["total"] is not None and s["next"] >= s["total"]:
                raise Reply(416, "invalidRange", "All bytes of this upload session have already been received.", "fragmentOverlap")
            if a < s["next"]:
                raise Reply(416, "invalidRange", "The uploaded fragment overlaps with data that has already been received.", "fragmentOverlap")
            if a > s["next"]:
                raise Reply(416, "invalidRange", "The uploaded fragment is out of order; expected a fragment starting at byte %d." % s["next"], "fragmentOutOfOrder")
            final = b + 1 == total
            if not final and self.body_len % FRAGMENT_UNIT:
                raise Reply(400, "invalidRequest", "The fragment size must be a multiple of 320 KiB (327680 bytes).")
            s["total"] = total
            with open(s["tmp"], "r+b") as f:
                f.seek(a)
                try:
                    self.read_body_to_file(f)
                except ClientGone:
                    f.truncate(a)      # an interrupted request's bytes are discarded (7.3)
                    raise
            s["next"] = b + 1
            s["expires"] = time.time() + self.cfg["upload_session_lifetime"]
        finally:
            s["lock"].release()
        if not final or s["defer"]:
            return self.send_json(202, self.status_json(s))
        return self.commit(key, s)

    def commit(self, key, s):
        qxh = qxh_file(s["tmp"])
        with self.emu.lock:
            self.emu.sessions.pop(key, None)
            try:
                if s["parent"].id not in self.emu.byid:
                    raise Reply(404, "itemNotFound", "The parent folder no longer exists.")
                status, n = self.emu.place_file(s["parent"], s["name"], s["existing"], s["behavior"],
                                                    s["tmp"], s["total"], qxh, s["fs_m"], s["fs_c"])
            except Reply:
                self.discard(s)
                raise
            d = self.emu.item_json(n, upload=True)
        self.send_json(status, d)


# ---------------------------------------------------------------- CONNECT proxy
class ProxyHandler(BaseHTTPRequestHandler):
    """Plain-HTTP forward proxy: "CONNECT host:port" to an emulated host opens
    a byte tunnel to its listener.  Served targets: the real names on port
    443 (--public-hosts) and localhost / 127.0.0.1 with a TLS listener's
    port.  Any other target gets 403 and no connection is attempted (nothing
    leaves this machine); a malformed one 400; other methods 405."""
    protocol_version = "HTTP/1.1"
    server_version = "fakegraph-proxy"
    sys_version = ""
    rbufsize = 0        # unbuffered: bytes after the CONNECT header belong to the tunnel
    timeout = 60

    def log_message(self, fmt, *args):
        pass

    def version_string(self):
        return self.server_version

    def answer(self, status, rec, headers=None):
        body = b"" if status == 200 else ("fakegraph proxy: %d %s\n" % (status, self.responses[status][0])).encode()
        rec["status"] = status
        self.server.emu.record(rec)       # logged before the client can see the answer
        self.send_response(status, "Connection established" if status == 200 else None)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if status != 200:
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_CONNECT(self):
        emu = self.server.emu
        target = self.path.strip().lower()
        hdrs = {}
        for k, v in self.headers.items():
            k = k.lower()
            hdrs[k] = "<redacted>" if k in ("authorization", "proxy-authorization") else v
        pa = self.headers.get("Proxy-Authorization")
        need = emu.config.get("proxy_auth") or ""
        valid = None
        if need:
            scheme, _, cred = (pa or "").strip().partition(" ")
            try:
                valid = scheme.lower() == "basic" and base64.b64decode(cred.strip(), validate=True).decode() == need
            except (ValueError, UnicodeDecodeError):
                valid = False
        upstream = emu.proxy_map.get(target)
        rec = {"listener": "proxy", "method": "CONNECT", "target": self.path, "path": self.path,
               "auth": "authorization" in hdrs, "headers": hdrs, "body_len": 0, "sni": None,
               "upstream": upstream, "proxy_authorization": pa is not None, "proxy_auth_valid": valid,
               "t": time.time()}
        if not re.fullmatch(r"[a-z0-9.-]+:\d{1,5}|\[[0-9a-f:.]+\]:\d{1,5}", target):
            self.close_connection = True
            return self.answer(400, rec)
        if valid is False:
            return self.answer(407, rec, {"Proxy-Authenticate": 'Basic realm="fakegraph"'})
        if upstream is None:
            return self.answer(403, rec)
        try:
            up = socket.create_connection(("127.0.0.1", emu.ports[upstream]), timeout=10)
        except OSError:
            self.close_connection = True
            return self.answer(502, rec)
        self.close_connection = True
        with up:
            self.answer(200, rec)
            tunnel(self.connection, up)

    def not_connect(self):
        self.close_connection = True
        self.answer(405, {"listener": "proxy", "method": self.command, "target": self.path, "path": self.path,
                          "auth": "Authorization" in self.headers, "headers": {}, "body_len": 0, "sni": None,
                          "upstream": None, "proxy_authorization": "Proxy-Authorization" in self.headers,
                          "proxy_auth_valid": None, "t": time.time()}, {"Allow": "CONNECT"})

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = not_connect


def tunnel(a, b):
    """Copy bytes both ways until either side closes, then close both."""
    def copy(src, dst):
        try:
            while True:
                buf = src.recv(65536)
                if not buf:
                    break
                dst.sendall(buf)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
    for s in (a, b):
        s.settimeout(None)       # the listeners' own idle timeout ends a quiet tunnel
    t = threading.Thread(target=copy, args=(b, a), daemon=True)
    t.start()
    copy(a, b)
    t.join()


# ---------------------------------------------------------------- control API
class ControlHandler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        pass

    def reply(self, status, obj, raw=None, ctype="application/json"):
        body = raw if raw is not None else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        emu = self.server.emu
        path, _, query = self.path.partition("?")
        f, out = None, None
        with emu.lock:      # snapshot under the lock, write the reply outside it
            if path == "/log":
                out = json.dumps(emu.log)
            elif path == "/devicecodes":
                out = json.dumps([{"user_code": d["user_code"], "state": d["state"], "client_id": d["client_id"],
                                   "scope": d["scope"], "polls": d["polls"]} for d in emu.devicecodes.values()])
            elif path == "/tokens":
                out = json.dumps({"refresh_issued": emu.refresh_issued, "access_issued_count": emu.access_count})
            elif path == "/config":
                out = json.dumps(emu.config)
            elif path == "/faults":
                out = json.dumps({"rules": emu.faults.snapshot()})
            elif path == "/tree":
                out = json.dumps(sorted(({"path": n.path(), "type": "folder" if n.folder else "file", "size": n.total_size(),
                                          "quickXorHash": n.qxh, "mtime": int(n.fs_modified), "modified": iso(n.fs_modified),
                                          "id": n.id} for n in emu.root.walk()), key=lambda e: e["path"]))
            elif path == "/file":
                n, _, _ = emu.resolve(emu.root, [x for x in parse_query(query).get("path", "").split("/") if x])
                if n is not None and not n.folder:
                    f, size = open(n.blob, "rb"), n.size
        if out is not None:
            return self.reply(200, None, raw=out.encode())
        if f is None:
            return self.reply(404, {"error": "not found"})
        with f:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            shutil.copyfileobj(f, self.wfile, 1 << 20)

    def do_POST(self):
        emu = self.server.emu
        n = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(n) or b"{}")
        except ValueError:
            return self.reply(400, {"error": "bad json"})
        p = self.path
        with emu.lock:
            if p == "/log/clear":
                emu.log = []
                return self.reply(200, {})
            if p == "/faults":
                try:
                    ids = emu.faults.add(body.get("rules") if isinstance(body, dict) else None)
                except ValueError as e:
                    return self.reply(400, {"error": str(e)})
                return self.reply(200, {"ids": ids})
            if p == "/faults/clear":
                emu.faults.clear()
                return self.reply(200, {})
            if p == "/config":
                for k, v in body.items():
                    cur = emu.config.get(k)
                    if isinstance(cur, bool) or isinstance(cur, str):
                        ok = type(v) is type(cur)
                    else:
                        ok = cur is not None and isinstance(v, (int, float)) and not isinstance(v, bool)
                    if not ok:
                        return self.reply(400, {"error": "bad config key or type: %s" % k})
                emu.config.update(body)
                return self.reply(200, emu.config)
            if p in ("/approve", "/deny"):
                for d in emu.devicecodes.values():
                    if d["user_code"] == body.get("user_code"):
                        if d["state"] == "pending":
                            d["state"] = "approved" if p == "/approve" else "denied"
                        return self.reply(200, {"user_code": d["user_code"], "state": d["state"]})
                return self.reply(404, {"error": "unknown user_code"})
            if p == "/seed":
                segs = [s for s in str(body.get("path", "")).split("/") if s]
                if not segs:
                    return self.reply(400, {"error": "path"})
                node = emu.root
                for i, s in enumerate(segs):
                    last = i == len(segs) - 1
                    child = node.children.get(s.lower())
                    if child is not None and (not last or body.get("folder")):
                        if not child.folder:
                            return self.reply(409, {"error": "a file is in the way"})
                        node = child
                        continue
                    if child is not None:
                        if child.folder:
                            return self.reply(409, {"error": "a folder is in the way"})
                        node = child
                    else:
                        node = emu.add_child(node, s, not last or bool(body.get("folder")))
                if not node.folder:
                    data = base64.b64decode(body.get("content_b64", ""))
                    blob = emu.new_blob()
                    with open(blob, "wb") as f:
                        f.write(data)
                    h = QuickXorHash()
                    h.update(data)
                    mt = body.get("mtime")
                    mt = parse_iso(mt) if isinstance(mt, str) else mt
                    emu.set_content(node, blob, len(data), h.b64(), mt)
                return self.reply(200, {"id": node.id})
            if p == "/seed_many":
                # bench: a folder of `count` small files in one call
                segs = [s for s in str(body.get("folder", "")).split("/") if s]
                count = int(body.get("count", 0))
                if not segs or count < 0 or count > 1000000:
                    return self.reply(400, {"error": "folder/count"})
                node = emu.root
                for s in segs:
                    child = node.children.get(s.lower())
                    node = child if child is not None else emu.add_child(node, s, True)
                data = b"x"
                h = QuickXorHash()
                h.update(data)
                blob = emu.new_blob()      # one blob shared by every item (bench only)
                with open(blob, "wb") as f:
                    f.write(data)
                for i in range(count):
                    c = emu.add_child(node, "item-%07d.txt" % i, False)
                    emu.set_content(c, blob, 1, h.b64())
                return self.reply(200, {"count": count})
            if p == "/expire_tokens":
                for t in emu.access.values():
                    t["expires"] = 0
                return self.reply(200, {})
            if p == "/reset":
                emu.reset()
                return self.reply(200, {})
            if p == "/shutdown":
                self.reply(200, {})
                emu.stop.set()
                return
        self.reply(404, {"error": "unknown"})


# ---------------------------------------------------------------- start-up
def make_pki(d, names=()):
    """Root CA -> intermediate CA -> leaf (RSA-2048, like Microsoft's chains).
    The server presents leaf + intermediate; clients trust ca.pem (the root).
    The leaf names localhost, 127.0.0.1 and `names` (the real hosts)."""
    def run(*args):
        subprocess.run(["openssl"] + list(args), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pk = os.path.join(d, "pki")
    os.makedirs(pk, exist_ok=True)
    f = lambda n: os.path.join(pk, n)
    procs = [subprocess.Popen(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", f(k)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for k in ("root.key", "int.key", "leaf.key")]
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError("openssl genpkey failed: %s" % p.stderr.read().decode())
    with open(f("ext.cnf"), "w") as e:
        e.write("[ca]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n"
                "[int]\nbasicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n"
                "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
                "[leaf]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1%s\nauthorityKeyIdentifier=keyid\n"
                % "".join(",DNS:" + n for n in names))
    run("req", "-new", "-x509", "-key", f("root.key"), "-subj", "/O=fakegraph/CN=fakegraph Test Root CA", "-days", "3650",
        "-sha256", "-config", f("ext.cnf"), "-extensions", "ca", "-out", os.path.join(d, "ca.pem"))
    run("req", "-new", "-key", f("int.key"), "-subj", "/O=fakegraph/CN=fakegraph TLS Issuing CA 01", "-out", f("int.csr"))
    run("x509", "-req", "-in", f("int.csr"), "-CA", os.path.join(d, "ca.pem"), "-CAkey", f("root.key"), "-set_serial",
        str(secrets.randbits(63)), "-days", "3650", "-sha256", "-extfile", f("ext.cnf"), "-extensions", "int", "-out", f("int.pem"))
    run("req", "-new", "-key", f("leaf.key"), "-subj", "/CN=localhost", "-out", f("leaf.csr"))
    run("x509", "-req", "-in", f("leaf.csr"), "-CA", f("int.pem"), "-CAkey", f("int.key"), "-set_serial",
        str(secrets.randbits(63)), "-days", "365", "-sha256", "-extfile", f("ext.cnf"), "-extensions", "leaf", "-out", f("leaf.pem"))
    with open(f("chain.pem"), "w") as out:
        for n in ("leaf.pem", "int.pem"):
            with open(f(n)) as i:
                out.write(i.read())
    return f("chain.pem"), f("leaf.key")


def main(argv=None):
    ap = argparse.ArgumentParser(description="Microsoft Graph / identity platform emulator for odcp tests")
    ap.add_argument("--dir", required=True)
    ap.add_argument("--auto-approve", type=int, default=0)
    ap.add_argument("--page-size", type=int, default=200)
    ap.add_argument("--interval", type=float, default=5.0)
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--public-hosts", action="store_true",
                    help="answer under the real host names (reach them through the proxy)")
    a = ap.parse_args(argv)
    cfg = dict(DEFAULT_CONFIG, auto_approve=a.auto_approve, page_size=a.page_size,
               interval=int(a.interval) if a.interval.is_integer() else a.interval)
    os.makedirs(a.dir, exist_ok=True)
    try:
        os.unlink(os.path.join(a.dir, "endpoints.json"))
    except OSError:
        pass
    emu = Emulator(a.dir, cfg)
    emu.verbose = a.verbose
    try:
        chain, key = make_pki(emu.dir, sorted(PUBLIC_HOSTS.values()) if a.public_hosts else ())
    except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
        err = getattr(e, "stderr", b"") or b""
        print("fakegraph: certificate generation failed: %s %s" % (e, err.decode(errors="replace")), file=sys.stderr)
        return 1
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
    ctx.load_cert_chain(chain, key)
    ctx.sni_callback = lambda sock, name, _ctx: setattr(sock, "sni", name)   # for Host checks and the log
    servers = {}
    for name, h in (("login", LoginHandler), ("graph", GraphHandler), ("download", DownloadHandler), ("upload", UploadHandler)):
        servers[name] = TLSServer(emu, name, h, ctx)
    control = QuietServer(("127.0.0.1", 0), ControlHandler)
    control.daemon_threads = True
    control.emu = emu
    proxy = QuietServer(("127.0.0.1", 0), ProxyHandler)
    proxy.daemon_threads = True
    proxy.emu = emu
    port = lambda n: servers[n].server_address[1]
    for n, srv in servers.items():
        emu.ports[n] = port(n)
        emu.proxy_map["localhost:%d" % port(n)] = emu.proxy_map["127.0.0.1:%d" % port(n)] = n
        if a.public_hosts:
            srv.public = PUBLIC_HOSTS[n]
            emu.proxy_map[PUBLIC_HOSTS[n] + ":443"] = n
    base = {n: "https://" + PUBLIC_HOSTS[n] if a.public_hosts else "https://localhost:%d" % port(n) for n in servers}
    emu.urls = {"login_url": base["login"], "graph_url": base["graph"] + "/v1.0",
                "download_url": base["download"], "upload_url": base["upload"],
                "control": "http://127.0.0.1:%d" % control.server_address[1], "ca": os.path.join(emu.dir, "ca.pem"),
                "pid": os.getpid(), "proxy": "http://127.0.0.1:%d" % proxy.server_address[1],
                "listeners": {n: "127.0.0.1:%d" % port(n) for n in servers}, "public_hosts": a.public_hosts}
    for srv in list(servers.values()) + [control, proxy]:
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: emu.stop.set())
    signal.signal(signal.SIGINT, lambda *_: emu.stop.set())
    # a ready odcp configuration directory: ODCP_CONFIG_DIR=STATEDIR/odcp
    os.makedirs(os.path.join(emu.dir, "odcp"), mode=0o700, exist_ok=True)
    # (with --public-hosts: odcp's default endpoints, reached through the proxy)
    with open(os.path.join(emu.dir, "odcp", "config"), "w") as f:
        f.write("# odcp profile for the emulator in %s\n[default]\nclient_id = 00000000-0000-0000-0000-0000000dcdcd\n"
                % emu.dir)
        if not a.public_hosts:
            f.write("login_url = %s\ngraph_url = %s\n" % (emu.urls["login_url"], emu.urls["graph_url"]))
        f.write("cacert = %s\n" % emu.urls["ca"])
    tmp = os.path.join(emu.dir, "endpoints.json.tmp")
    with open(tmp, "w") as f:
        json.dump(emu.urls, f, indent=1)
    os.replace(tmp, os.path.join(emu.dir, "endpoints.json"))
    if a.verbose:
        print(json.dumps(emu.urls, indent=1), flush=True)
    while not emu.stop.wait(0.5):
        pass
    everything = list(servers.values()) + [control, proxy]
    stoppers = [threading.Thread(target=srv.shutdown) for srv in everything]
    for t in stoppers:
        t.start()
    for t in stoppers:
        t.join()
    for srv in everything:
        srv.server_close()
    try:        # a stopped emulator leaves no "ready" file behind
        os.unlink(os.path.join(emu.dir, "endpoints.json"))
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
