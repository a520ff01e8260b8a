/**
 * Low-rank factorisation of a weight matrix from its SVD: W (m×n) ≈ A·B with A = U_r·√S_r (m×r) and
 * B = √S_r·V_rᵀ (r×n), the best rank-r approximation (Eckart–Young). The SVD comes from the eigendecomposition of
 * the smaller Gram matrix (WᵀW or WWᵀ) by cyclic Jacobi rotations, in float64: the matrices here are at most a
 * few thousand on a side, and what is kept are the largest singular values, which the Gram matrix gives to full
 * float32 precision.
 */

/** The eigenvalues (descending) and eigenvectors (columns, n×n row-major) of symmetric `a` (n×n, float64). */
export function symmetricEigen(a: Float64Array, n: number): { values: Float64Array; vectors: Float64Array } {
  const m = a.slice();
  const v = new Float64Array(n * n);
  for (let i = 0; i < n; i++) v[i * n + i] = 1;
  for (let sweep = 0; sweep < 60; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += m[p * n + q] ** 2;
    if (off < 1e-22) break;
    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = m[p * n + q];
        if (apq === 0) continue;
        const theta = (m[q * n + q] - m[p * n + p]) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < n; k++) {
          const mkp = m[k * n + p];
          const mkq = m[k * n + q];
          m[k * n + p] = c * mkp - s * mkq;
          m[k * n + q] = s * mkp + c * mkq;
        }
        for (let k = 0; k < n; k++) {
          const mpk = m[p * n + k];
          const mqk = m[q * n + k];
          m[p * n + k] = c * mpk - s * mqk;
          m[q * n + k] = s * mpk + c * mqk;
        }
        for (let k = 0; k < n; k++) {
          const vkp = v[k * n + p];
          const vkq = v[k * n + q];
          v[k * n + p] = c * vkp - s * vkq;
          v[k * n + q] = s * vkp + c * vkq;
        }
      }
    }
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((x, y) => m[y * n + y] - m[x * n + x]);
  const values = Float64Array.from(order, (i) => m[i * n + i]);
  const vectors = new Float64Array(n * n);
  order.forEach((from, to) => {
    for (let k = 0; k < n; k++) vectors[k * n + to] = v[k * n + from];
  });
  return { values, vectors };
}

/** W (m×n, row-major) = U·diag(S)·Vᵀ with k = min(m, n) singular values, descending. */
export function svd(
  w: Float32Array,
  m: number,
  n: number,
): { u: Float64Array; s: Float64Array; v: Float64Array; k: number } {
  const k = Math.min(m, n);
  // Eigenvectors of WᵀW are V (n ≤ m); of WWᵀ, U (m < n). The other side is W·V/σ or Wᵀ·U/σ.
  const tall = n <= m;
  const gram = new Float64Array(k * k);
  for (let i = 0; i < k; i++) {
    for (let j = i; j < k; j++) {
      let sum = 0;
      if (tall) for (let r = 0; r < m; r++) sum += w[r * n + i] * w[r * n + j];
      else for (let c = 0; c < n; c++) sum += w[i * n + c] * w[j * n + c];
      gram[i * k + j] = sum;
      gram[j * k + i] = sum;
    }
  }
  const { values, vectors } = symmetricEigen(gram, k);
  const s = values.map((e) => Math.sqrt(Math.max(e, 0)));
  const other = new Float64Array((tall ? m : n) * k);
  for (let c = 0; c < k; c++) {
    if (s[c] === 0) continue;
    if (tall) {
      for (let r = 0; r < m; r++) {
        let sum = 0;
        for (let j = 0; j < n; j++) sum += w[r * n + j] * vectors[j * k + c];
        other[r * k + c] = sum / s[c];
      }
    } else {
      for (let col = 0; col < n; col++) {
        let sum = 0;
        for (let i = 0; i < m; i++) sum += w[i * n + col] * vectors[i * k + c];
        other[col * k + c] = sum / s[c];
      }
    }
  }
  return tall ? { u: other, s, v: vectors, k } : { u: vectors, s, v: other, k };
}

/** The rank whose singular values keep `energy` of ∑σ² (at least 1). */
export function rankForEnergy(s: Float64Array, energy: number): number {
  const total = s.reduce((a, x) => a + x * x, 0);
  let kept = 0;
  for (let r = 0; r < s.length; r++) {
    kept += s[r] * s[r];
    if (kept >= energy * total) return r + 1;
  }
  return s.length;
}

/** W (m×n) as A (m×r) and B (r×n), A·B its best rank-r approximation, the singular values split evenly. */
export function lowRankFactors(
  w: Float32Array,
  m: number,
  n: number,
  r: number,
): { a: Float32Array; b: Float32Array } {
  const { u, s, v, k } = svd(w, m, n);
  const a = new Float32Array(m * r);
  const b = new Float32Array(r * n);
  for (let c = 0; c < r; c++) {
    const root = Math.sqrt(s[c]);
    for (let i = 0; i < m; i++) a[i * r + c] = u[i * k + c] * root;
    for (let j = 0; j < n; j++) b[c * n + j] = v[j * k + c] * root;
  }
  return { a, b };
}
