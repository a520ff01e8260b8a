# One kd-launch agent per container; docker-compose.yml runs a two-node job with it.
FROM node:20-bookworm-slim
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends libopenblas-dev gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
# npm ci builds the BLAS binding (the package's install script), so its sources come first.
COPY native ./native
RUN npm ci --no-audit --no-fund
COPY . .
ENTRYPOINT ["node", "bin/kd-launch.js"]
