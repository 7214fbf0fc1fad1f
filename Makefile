# odcp: a OneDrive client in one C file.  GNU make; see README.
VERSION   = 0.1
CC        = cc
CFLAGS    = -std=c99 -Os -g -Wall -Wextra -pedantic -Wstrict-prototypes \
	    -Wmissing-prototypes -Wmissing-declarations -Wshadow \
	    -Wpointer-arith -Wsign-compare
BEARSSL   = vendor/src/bearssl-$(shell cat vendor/bearssl.version)
CLIENT_ID =
CPPFLAGS  = -D_XOPEN_SOURCE=700 -D_FILE_OFFSET_BITS=64 \
	    -DODCP_VERSION='"$(VERSION)"' -DODCP_CLIENT_ID='"$(CLIENT_ID)"' \
	    -I$(BEARSSL)/inc
LDFLAGS   =
PREFIX    = /usr/local
MANPREFIX = $(PREFIX)/share/man
CCTAG     = $(notdir $(firstword $(CC)))
LIB       = vendor/build/$(CCTAG)/libbearssl.a
SANFLAGS  = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

all: odcp

$(LIB):
	vendor/bearssl.sh build '$(CC)' vendor/build/$(CCTAG)

odcp: odcp.c $(LIB)
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ odcp.c $(LDFLAGS) $(LIB)

# a fully static, stripped binary linked against musl
static:
	$(MAKE) odcp-static CC=musl-gcc
odcp-static: odcp.c $(LIB)
	$(CC) $(CPPFLAGS) $(CFLAGS) -static -s -o $@ odcp.c $(LIB)

tests/unit: tests/unit.c odcp.c $(LIB)
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ tests/unit.c $(LIB)
tests/unit-san: tests/unit.c odcp.c $(LIB)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(SANFLAGS) -o $@ tests/unit.c $(LIB)

check: odcp tests/unit tests/unit-san
	tests/run

# libFuzzer over the parsers (JSON, HTTP framing, paths, times, config,
# tokens): FUZZTIME seconds per target, corpora under /tmp
FUZZTIME = 10
FUZZERS  = json item page session drive gerror auth http hpage path time conf token queue ca \
	   proxy
tests/fuzz: tests/fuzz.c odcp.c $(LIB)
	clang $(CPPFLAGS) -std=c99 -g -O1 -fsanitize=fuzzer,address,undefined \
	    -fno-sanitize-recover=undefined -o $@ tests/fuzz.c $(LIB)
fuzz: tests/fuzz
	for t in $(FUZZERS); do mkdir -p /tmp/odcp-fuzz/$$t && \
	    ODCP_FUZZ=$$t tests/fuzz -close_fd_mask=2 -max_total_time=$(FUZZTIME) \
	    -artifact_prefix=/tmp/odcp-fuzz/$$t- /tmp/odcp-fuzz/$$t > /tmp/odcp-fuzz/$$t.log 2>&1 || \
	    { cat /tmp/odcp-fuzz/$$t.log; exit 1; }; \
	    echo "fuzz $$t: $$(grep -o 'Done [0-9]* runs' /tmp/odcp-fuzz/$$t.log)"; \
	done

bench: odcp
	tests/bench

demo: odcp
	tests/demo

# Debian's rclone against the emulator, which answers under the real host
# names through its CONNECT proxy: fidelity to a client we did not write
fidelity:
	tests/fidelity

# warnings as errors with both compilers, and the man page
lint: $(LIB)
	$(CC) $(CPPFLAGS) $(CFLAGS) -Werror -fsyntax-only odcp.c
	clang $(CPPFLAGS) $(CFLAGS) -Werror -fsyntax-only odcp.c
	mandoc -Tlint -Wwarning man/odcp.1

install: odcp
	mkdir -p $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(MANPREFIX)/man1
	cp odcp $(DESTDIR)$(PREFIX)/bin/odcp
	chmod 755 $(DESTDIR)$(PREFIX)/bin/odcp
	cp man/odcp.1 $(DESTDIR)$(MANPREFIX)/man1/odcp.1
	chmod 644 $(DESTDIR)$(MANPREFIX)/man1/odcp.1

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/odcp $(DESTDIR)$(MANPREFIX)/man1/odcp.1

toc:
	grep -n '^/\* ==' odcp.c

clean:
	rm -rf odcp odcp-static tests/unit tests/unit-san tests/fuzz vendor/build

.PHONY: all static check fuzz bench demo fidelity lint install uninstall toc clean
