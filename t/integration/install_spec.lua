-- t/integration/install_spec.lua - `make install DESTDIR=…` (docs/admin.md, "Installation"): every file in its
-- place, the installed binary finding its library there, the default configuration (kept when present) that
-- `luamta check` passes, man pages that render without warnings, a unit that `systemd-analyze verify` accepts,
-- opt-in sendmail/mailq links, and `make uninstall` leaving nothing behind.
local server = require "t.helpers.server"
local tools = require "t.helpers.tools"
local lfs = require "lfs"

local sh_quote, run, read_file, write_file = server.sh_quote, server.run, server.read_file, server.write_file
local SRC = (debug.getinfo(1, "S").source:match("^@(.*)t/integration/install_spec%.lua$") or "./")
if SRC == "" then SRC = "./" end
local BUILD = os.getenv("LUAMTA_BUILDDIR") or SRC

-- files(dir) -> every file and symlink under dir, as paths relative to dir, sorted
local function files(dir)
  local out = {}
  local function walk(d, rel)
    for name in lfs.dir(d) do
      if name ~= "." and name ~= ".." then
        local path, r = d .. "/" .. name, rel .. "/" .. name
        local mode = lfs.symlinkattributes(path, "mode")
        if mode == "directory" then walk(path, r) else out[#out + 1] = r end
      end
    end
  end
  if lfs.attributes(dir, "mode") == "directory" then walk(dir, "") end
  table.sort(out)
  return out
end

-- find(list, suffix) -> the entry of list that ends with suffix
local function find(list, suffix)
  for _, f in ipairs(list) do
    if f:sub(-#suffix) == suffix then return f end
  end
end

local function make(target, dest)
  local mk = tools.need("make")
  return run(mk .. " -s -C " .. sh_quote(BUILD) .. " " .. target .. " DESTDIR=" .. sh_quote(dest))
end

describe("make install", function()
  local dest, list

  setup(function()
    dest = server.tempdir()
    local out, rc = make("install", dest)
    assert(rc == 0, "make install failed:\n" .. out)
    list = files(dest)
  end)

  teardown(function()
    if dest and not os.getenv("LUAMTA_KEEP_TMP") then run("rm -rf " .. sh_quote(dest)) end
  end)

  it("lays out the binary, the library, every bundled rule, the man pages, the unit and the configuration", function()
    local all = table.concat(list, "\n")
    for _, want in ipairs { "/sbin/luamta", "/etc/luamta/luamta.lua", "/man/man8/luamta.8", "/man/man5/luamta.lua.5",
        "/man/man7/luamta-rules.7", "/systemd/system/luamta.service" } do
      assert.truthy(find(list, want), want .. " not installed:\n" .. all)
    end
    -- every Lua file of the source tree, under $pkgdatadir
    for _, sub in ipairs { "lua/luamta", "rules" } do
      for name in lfs.dir(SRC .. sub) do
        if name:match("%.lua$") then
          assert.truthy(find(list, "/share/luamta/" .. sub .. "/" .. name), sub .. "/" .. name .. " not installed")
        end
      end
    end
  end)

  it("installs a default configuration that luamta check passes: loopback, server.user, no relaying", function()
    local cfg = dest .. find(list, "/etc/luamta/luamta.lua")
    local text = read_file(cfg)
    assert.truthy(text:find('listen = { "127.0.0.1:25" }', 1, true), text)
    assert.truthy(text:find('user = "luamta"', 1, true), text)
    assert.truthy(text:find('relay = { enforce = "all" }', 1, true), text)
    assert.falsy(text:find("@[%a_]+@"), "unsubstituted paths:\n" .. text)
    -- As an unprivileged user (the test machine has no "luamta" user to validate as), with the installed library.
    local bin = dest .. find(list, "/sbin/luamta")
    local lib = dest .. find(list, "/share/luamta/lua/luamta/init.lua"):gsub("/lua/luamta/init%.lua$", "")
    run("chmod -R a+rX " .. sh_quote(dest))
    local setpriv = tools.need("setpriv")
    local out, rc = run(("cd / && LUAMTA_DATADIR=%s %s --reuid=65534 --regid=65534 --clear-groups %s check -c %s")
      :format(sh_quote(lib), setpriv, sh_quote(bin), sh_quote(cfg)))
    assert.equal(0, rc, out)
    assert.truthy(out:find(cfg .. ": configuration and rules OK", 1, true), out)
    for line in out:gmatch("[^\n]+") do
      if line:find("^warning:") then assert.truthy(line:find("loopback", 1, true), out) end
    end
  end)

  it("keeps a configuration that is already there", function()
    local cfg = dest .. find(list, "/etc/luamta/luamta.lua")
    local mine = "-- the administrator's own\n"
    local before = read_file(cfg)
    write_file(cfg, mine)
    local out, rc = make("install", dest)
    local after = read_file(cfg)
    write_file(cfg, before)
    assert.equal(0, rc, out)
    assert.equal(mine, after)
  end)

  it("installs man pages that man renders without a warning", function()
    local man = tools.need("man")
    for _, page in ipairs { "/man8/luamta.8", "/man5/luamta.lua.5", "/man7/luamta-rules.7" } do
      local path = dest .. find(list, page)
      local p = assert(io.popen("MANWIDTH=80 " .. man .. " --warnings -l " .. sh_quote(path)
        .. " 2>&1 >/dev/null; echo rc=$?"))
      local warnings = p:read("a")
      p:close()
      assert.equal("rc=0\n", warnings, page)
      local text = run("MANWIDTH=80 " .. man .. " -l " .. sh_quote(path) .. " 2>/dev/null")
      assert.truthy(#text > 500, page .. " renders to almost nothing")
    end
    local text = run("MANWIDTH=200 " .. man .. " -l " .. sh_quote(dest .. find(list, "/man5/luamta.lua.5")))
    -- every key the loader knows, with its default
    for _, key in ipairs { "server.user", "server.extra_rules", "inbound.relay.enforce", "routing.smart_host_all",
        "delivery.maildir", "dns.verify_ptr", "log.syslog" } do
      assert.truthy(text:find(key, 1, true), key .. " is not in luamta.lua(5)")
    end
    assert.truthy(text:find("Perform anti-relay enforcement for these connecting hosts", 1, true))
  end)

  it("installs a unit that systemd-analyze verify accepts: Type=notify, checked reloads, hardening", function()
    local analyze = tools.need("systemd-analyze")
    local unit = read_file(dest .. find(list, "/systemd/system/luamta.service"))
    for _, want in ipairs { "Type=notify", "ExecReload=[^\n]*luamta check", "ExecReload=[^\n]*luamta reload",
        "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=[^\n]*/spool/luamta", "ProtectHome=yes",
        "PrivateTmp=yes", "PrivateDevices=yes", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_SETUID CAP_SETGID" } do
      assert.truthy(unit:find(want), want .. " not in the unit:\n" .. unit)
    end
    -- Verified with its commands and man pages where DESTDIR put them (verify checks that both exist).
    local prefix = find(list, "/sbin/luamta"):gsub("/sbin/luamta$", "")
    local dir = server.tempdir()
    local from, to = prefix:gsub("%p", "%%%0"), (dest .. prefix):gsub("%%", "%%%%")
    write_file(dir .. "/luamta.service", (unit:gsub(from, to)))
    local out, rc = run("MANPATH=" .. sh_quote(dest .. prefix .. "/share/man") .. " " .. analyze .. " verify "
      .. sh_quote(dir .. "/luamta.service"))
    run("rm -rf " .. sh_quote(dir))
    assert.equal(0, rc, out)
    assert.equal("", out)
  end)

  it("adds sendmail and mailq links with make install-mta-links, and make uninstall leaves nothing", function()
    local out, rc = make("install-mta-links", dest)
    assert.equal(0, rc, out)
    local after = files(dest)
    local sendmail, mailq = find(after, "/sbin/sendmail"), find(after, "/bin/mailq")
    assert.truthy(sendmail, table.concat(after, "\n"))
    assert.truthy(mailq, table.concat(after, "\n"))
    assert.equal("luamta", lfs.symlinkattributes(dest .. sendmail, "target"):match("[^/]+$"))
    assert.equal("luamta", lfs.symlinkattributes(dest .. mailq, "target"):match("[^/]+$"))
    out, rc = make("uninstall", dest)
    assert.equal(0, rc, out)
    assert.same({}, files(dest))
  end)
end)
