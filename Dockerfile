# One kd-launch agent per container; docker-compose.yml runs a two-node job with it.
#   docker build -t kd-launch . && docker run --rm kd-launch --nproc 2 configs/mnist-train.yaml
FROM node:20-bookworm-slim
# OpenBLAS and a C compiler: npm ci's install step compiles the native bindings (BLAS kernels, fp16/bf16 codec,
# shared memory, optimizers) against them.
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends libopenblas-dev gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# npm ci runs the package's install script (native/build.mjs) and its prepare script (tsc -p tsconfig.build.json,
# which compiles src/ and launcher/ to dist/), so what both read comes first; the rest of the tree after, so that
# editing a config or a test does not reinstall.
COPY package.json package-lock.json ./
COPY native ./native
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY launcher ./launcher
# KD_BLAS_REQUIRED: everything the bindings need is installed above, so a failed build fails the image rather than
# leaving it on the slower stock kernels.
RUN KD_BLAS_REQUIRED=1 npm ci --no-audit --no-fund
COPY . .
ENTRYPOINT ["node", "bin/kd-launch.js"]
