-- wrk script for benches/l7_vs_peers.sh: connect to 127.0.0.1 (the URL's port) whatever host the
-- URL names, so the URL can carry the vhost (https://bench.example.com:PORT/ -> TLS SNI
-- bench.example.com, which HAProxy's Marathon-LB frontend routes on) without touching
-- /etc/hosts. Only wrk.resolve is replaced: no per-request Lua runs.
wrk.resolve = function(host, service)
  local addrs = wrk.lookup("127.0.0.1", service)
  for i = #addrs, 1, -1 do
    if not wrk.connect(addrs[i]) then
      table.remove(addrs, i)
    end
  end
  wrk.addrs = addrs
end
