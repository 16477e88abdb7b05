"""Stream clients for the benchmarks (stdlib only).

latency MOCK_PORT AIRLOCK_PORT KEY N   TTFB and inter-chunk gaps, direct vs through Airlock
hold    MOCK_PORT AIRLOCK_PORT KEY N PID   open N streams at once through Airlock, report peak RSS
"""
import asyncio
import json
import socket
import statistics
import sys
import time

GAP_MS = 20
WORDS = 40


def request(port, path, key, gap_ms, words):
    body = json.dumps({"model": "gpt-4o-mini", "stream": True,
                       "messages": [{"role": "user", "content": " ".join(f"w{i}" for i in range(words))}]})
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nx-mock-scenario: gap_ms={gap_ms}; chunk_words=1\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}").encode()


def one_stream(port, path, key):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t0 = time.perf_counter()
    s.sendall(request(port, path, key, GAP_MS, WORDS))
    arrivals, buf = [], b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        now = time.perf_counter()
        n = chunk.count(b"data: ")
        if n:
            arrivals.extend([now] * n)
        buf += chunk
    s.close()
    if not arrivals:
        raise SystemExit(f"no events from port {port}: {buf[:300]!r}")
    ttfb = (arrivals[0] - t0) * 1000
    gaps = [(b - a) * 1000 for a, b in zip(arrivals, arrivals[1:]) if b > a]
    # The last gap is reported apart: through Airlock it spans the usage event Airlock asked
    # the upstream for and then removed, so it is one upstream gap longer by design.
    return ttfb, gaps[:-1], gaps[-1:]


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def latency(mock_port, al_port, key, n):
    res = {}
    for name, port, path in (("direct", mock_port, "/v1/chat/completions"),
                             ("via Airlock", al_port, "/openai/v1/chat/completions")):
        one_stream(port, path, key)  # warm
        ttfbs, gaps, lasts = [], [], []
        for _ in range(n):
            t, g, last = one_stream(port, path, key)
            ttfbs.append(t)
            gaps.extend(g)
            lasts.extend(last)
        res[name] = (ttfbs, gaps, lasts)
    print(f"{n} streams each way; {WORDS} events per stream, {GAP_MS} ms apart at the upstream\n")
    print("| measure | direct p50 | direct p99 | via Airlock p50 | via Airlock p99 |")
    print("|---|---|---|---|---|")
    (dt, dg, dl), (vt, vg, vl) = res["direct"], res["via Airlock"]
    print(f"| time to first event (ms) | {pct(dt,50):.2f} | {pct(dt,99):.2f} | {pct(vt,50):.2f} | {pct(vt,99):.2f} |")
    print(f"| gap between events, all but the last (ms) | {pct(dg,50):.2f} | {pct(dg,99):.2f} | {pct(vg,50):.2f} | {pct(vg,99):.2f} |")
    print(f"| last gap of each stream (ms) | {pct(dl,50):.2f} | {pct(dl,99):.2f} | {pct(vl,50):.2f} | {pct(vl,99):.2f} |")
    print(f"\nmean gap: direct {statistics.mean(dg):.3f} ms, via Airlock {statistics.mean(vg):.3f} ms")


async def hold(mock_port, al_port, key, n, pid):
    started = 0
    writers = []

    async def open_one():
        nonlocal started
        r, w = await asyncio.open_connection("127.0.0.1", al_port)
        w.write(request(al_port, "/openai/v1/chat/completions", key, 1000, 120))
        await w.drain()
        while b"data: " not in await r.read(4096):
            pass
        started += 1
        writers.append(w)
        while await r.read(4096):
            pass

    tasks = [asyncio.create_task(open_one()) for _ in range(n)]
    t0 = time.time()
    while started < n and time.time() - t0 < 120:
        await asyncio.sleep(0.2)
    peak = 0
    for _ in range(10):
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS"):
                    peak = max(peak, int(line.split()[1]))
        await asyncio.sleep(0.3)
    print(f"open streams: {started} of {n}")
    print(f"peak RSS with {started} open streams: {peak} kB ({peak / 1024:.1f} MiB)")
    for w in writers:
        w.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    mode, mock_port, al_port, key, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    if mode == "latency":
        latency(mock_port, al_port, key, n)
    else:
        asyncio.run(hold(mock_port, al_port, key, n, int(sys.argv[6])))
