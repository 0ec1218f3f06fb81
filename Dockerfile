# syntax=docker/dockerfile:1
# One image for `modelgate gateway`, `modelgate serve` and `modelgate up` (docs/kubernetes.md).
#   docker build -t modelgate:dev .
#   docker run --rm -p 8080:8080 modelgate:dev up --listen 0.0.0.0:8080
# Checked by hadolint in ./scripts/test (deploy/check); no Docker engine runs on the CI machines.

# --- build: the release binary, with the pure-Rust proto compiler (no protoc) ---
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p modelgate \
 && install -D target/release/modelgate /out/modelgate

# --- onnxruntime: its shared library from the pinned PyPI wheel (the model server's fastest runtime on CPU) ---
FROM python:3.11-slim-bookworm AS onnxruntime
WORKDIR /ort
RUN pip download --no-cache-dir --quiet --no-deps --only-binary=:all: onnxruntime==1.32.0 \
 && python3 -c "import glob, zipfile; w = zipfile.ZipFile(glob.glob('onnxruntime-*.whl')[0]); [w.extract(n, '.') for n in w.namelist() if '/capi/libonnxruntime.so' in n]" \
 && install -D onnxruntime/capi/libonnxruntime.so.* /out/libonnxruntime.so

# --- runtime: glibc, CA certificates, the binary, onnxruntime and the bundled example model; non-root ---
FROM debian:bookworm-slim
# CA certificates unpinned on purpose: the image takes Debian's current ones (security updates) at each build.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin modelgate
COPY --from=build /out/modelgate /usr/local/bin/modelgate
COPY --from=onnxruntime /out/libonnxruntime.so /usr/local/lib/modelgate/libonnxruntime.so
COPY examples/models /opt/modelgate/models
# onnxruntime found without flags; nothing is written inside the image (logs go to stderr, state to mounted volumes),
# so the root filesystem can be read-only.
ENV ORT_DYLIB_PATH=/usr/local/lib/modelgate/libonnxruntime.so
USER 10001:10001
EXPOSE 8080 8081 8000 8001 8100
# The model server's readiness by default (`serve`); the gateway's is /status/ready on its status listener.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["modelgate", "probe", "http://127.0.0.1:8000/v2/health/ready"]
ENTRYPOINT ["modelgate"]
CMD ["serve", "--model-repository", "/opt/modelgate/models", "--listen", "0.0.0.0:8000"]
