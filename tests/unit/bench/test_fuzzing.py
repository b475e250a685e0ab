from bench.fuzzing import Generator, Route

ROUTES = [Route("models/{name}/performance", ("GET",)), Route("score", ("POST",)), Route("{*path}", ())]


def _requests(seed: int, n: int = 300) -> list[tuple]:
    gen = Generator(ROUTES, seed, {"name": ["M"], "path": ["x"]})
    return [(r.method, r.path, sorted(r.headers.items()), r.body, r.raw) for r in (gen.request() for _ in range(n))]


def test_the_generator_is_seeded():
    assert _requests(3) == _requests(3)
    assert _requests(3) != _requests(4)


def test_the_generator_covers_routes_methods_bodies_and_framing():
    gen = Generator(ROUTES, 0, {"name": ["M"], "path": ["x"]})
    reqs = [gen.request() for _ in range(2000)]
    assert {r.route for r in reqs} == {"models/{name}/performance", "score", "{*path}", "(raw framing)"}
    assert {"GET", "POST", "FOO", "RAW"} <= {r.method for r in reqs}
    assert any(r.body and r.body.startswith(b"[" * 100) for r in reqs)  # deep nesting
    assert any(r.headers.get("Content-Type") == "text/plain" for r in reqs)
    assert any("/api/models/M/performance" in r.path for r in reqs)
    assert all(r.raw is None or b"HTTP/2" not in r.raw for r in reqs)
