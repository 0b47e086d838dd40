-- A minimal Prosody for the XMPP comparison of bench/compare.sh (ONLY=xmpp).
-- Run in the foreground as the current user, everything under one directory:
--
--   PROSODY_DIR=/tmp/out/prosody PROSODY_PORT=39600 prosody -F --config loadtest/bench/prosody/prosody.cfg.lua
--
-- PROSODY_DIR holds the data dir (data/), the log and the pidfile; the account
-- user/secret is data/localhost/accounts/user.dat (internal_plain: the password
-- in clear), written by bench/lib.sh's prosody_setup before the start.
local dir = os.getenv("PROSODY_DIR") or error("PROSODY_DIR is not set")
local port = tonumber(os.getenv("PROSODY_PORT") or error("PROSODY_PORT is not set"))

data_path = dir .. "/data"
pidfile = dir .. "/prosody.pid"
certificates = dir .. "/certs" -- empty: no TLS
log = { info = dir .. "/prosody.log" }
-- the current user, whoever it is (root included: no switch to a `prosody` user)
run_as_root = true

network_backend = "epoll"
-- room for the connects under way at once (tidings-load --inflight, 1,000)
network_settings = { tcp_backlog = 1024 }
interfaces = { "127.0.0.1" }
c2s_ports = { port }
c2s_interfaces = { "127.0.0.1" }
s2s_ports = {}
component_ports = {}
http_ports = {}
https_ports = {}
c2s_ports_tls = {}
c2s_direct_tls_ports = {}

-- Plain SASL over loopback, no TLS, the password stored in clear.
c2s_require_encryption = false
s2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
storage = "internal"
allow_registration = false

-- Only what the scenario uses. Prosody always loads its platform module
-- (posix: pidfile, foreground), presence, message, iq, c2s, offline, s2s and
-- s2s_auth_certs; the last three are switched off here.
modules_enabled = { "saslauth"; "roster"; "disco"; "ping" }
modules_disabled = { "offline"; "s2s"; "s2s_auth_certs" }

VirtualHost "localhost"
