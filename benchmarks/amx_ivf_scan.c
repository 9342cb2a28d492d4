// Prototype scan for benchmarks/index_amx_scan.py: an IVF index's lists scored exactly in int8 on AMX tiles.
//
// Layout (built by the Python side; dims a multiple of 64): each list's vectors as int8 codes with one float scale
// per vector, in blocks of 16 vectors; a block is dims/4 rows of 64 bytes, row r holding dims 4r..4r+3 of its 16
// vectors (AMX's VNNI layout), so a block's 16-row slices are the B tiles of TDPBSSD. The queries probing a list
// are taken 16 at a time as the A tile, so one list is read once a batch for up to 16 of its queries. Each thread
// keeps a min-heap of the K best slots per query; `rerank` merges the threads' heaps and scores those candidates
// exactly in float32.
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_LIST 16384  /* vectors per list */

typedef struct {
    uint8_t palette_id, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((packed)) tile_config;

/* Linux asks a process to request AMX state before its first tile instruction; 0 on success. */
int amx_request(void) { return (int)syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */); }

static inline void heap_replace_top(float* value, int64_t* pos, int k, float v, int64_t p) {
    int i = 0;
    for (;;) {
        int left = 2 * i + 1, right = left + 1, child;
        if (left >= k) break;
        child = (right < k && value[right] < value[left]) ? right : left;
        if (value[child] >= v) break;
        value[i] = value[child]; pos[i] = pos[child]; i = child;
    }
    value[i] = v; pos[i] = p;
}

/* codes: blocks x dims/4 x 16 uint32 (4 int8 each); scale: one per padded position; block_start: nlist + 1;
 * list_size: nlist; pair_start: nlist + 1 offsets into pair_query (the queries probing each list, by list);
 * queries: nq x dims/4 uint32 (int8 codes). out_value / out_pos: threads x nq x k slots (-1: none), one heap per
 * query and thread. */
int scan(const uint32_t* codes, const float* scale, const int64_t* block_start, const int32_t* list_size,
         const int64_t* pair_start, const int32_t* pair_query, const uint32_t* queries, int dims, int nq, int nlist,
         int k, int threads, float* out_value, int64_t* out_pos) {
    const int quads = dims / 4;
    if (dims % 64 || dims > 1024) return -1;
    for (int l = 0; l < nlist; l++) if (list_size[l] > MAX_LIST) return -2;
    for (int64_t i = 0; i < (int64_t)threads * nq * k; i++) { out_value[i] = -1e30f; out_pos[i] = -1; }
    #pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num();
        float* heap_value = out_value + (int64_t)t * nq * k;
        int64_t* heap_pos = out_pos + (int64_t)t * nq * k;
        float* threshold = aligned_alloc(64, sizeof(float) * ((nq + 15) / 16 * 16));
        int32_t* scores = aligned_alloc(64, sizeof(int32_t) * 16 * MAX_LIST);
        uint32_t* a_rows = aligned_alloc(64, sizeof(uint32_t) * 16 * 256);
        for (int i = 0; i < nq; i++) threshold[i] = -1e30f;
        tile_config config;
        memset(&config, 0, sizeof config);
        config.palette_id = 1;
        for (int i = 0; i < 5; i++) { config.rows[i] = 16; config.colsb[i] = 64; }  /* C0 C1 A B0 B1 */
        _tile_loadconfig(&config);
        #pragma omp for schedule(dynamic, 4)
        for (int l = 0; l < nlist; l++) {
            int n = list_size[l], blocks = (n + 15) / 16, stride = blocks * 16;
            int64_t first_block = block_start[l];
            for (int64_t g = pair_start[l]; g < pair_start[l + 1]; g += 16) {
                int m = (int)(pair_start[l + 1] - g < 16 ? pair_start[l + 1] - g : 16);
                for (int j = 0; j < m; j++)
                    memcpy(a_rows + j * quads, queries + (int64_t)pair_query[g + j] * quads, quads * 4);
                if (m < 16) memset(a_rows + m * quads, 0, (16 - m) * quads * 4);
                for (int b = 0; b < blocks; b += 2) {  /* two blocks per A tile load */
                    const uint32_t* b0 = codes + (first_block + b) * (int64_t)quads * 16;
                    const uint32_t* b1 = b + 1 < blocks ? b0 + quads * 16 : b0;
                    _tile_zero(0); _tile_zero(1);
                    for (int c = 0; c < quads / 16; c++) {  /* 64 dims per step */
                        _tile_loadd(2, a_rows + c * 16, quads * 4);
                        _tile_loadd(3, b0 + c * 256, 64);
                        _tile_loadd(4, b1 + c * 256, 64);
                        _tile_dpbssd(0, 2, 3);
                        _tile_dpbssd(1, 2, 4);
                    }
                    _tile_stored(0, scores + b * 16, stride * 4);
                    if (b + 1 < blocks) _tile_stored(1, scores + (b + 1) * 16, stride * 4);
                }
                const float* list_scale = scale + first_block * 16;
                for (int j = 0; j < m; j++) {
                    int q = pair_query[g + j];
                    const int32_t* row = scores + (int64_t)j * stride;
                    float* hv = heap_value + (int64_t)q * k;
                    int64_t* hp = heap_pos + (int64_t)q * k;
                    for (int v0 = 0; v0 < n; v0 += 16) {
                        __mmask16 valid = n - v0 >= 16 ? 0xFFFF : (__mmask16)((1u << (n - v0)) - 1);
                        __m512 s = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(row + v0)),
                                                 _mm512_loadu_ps(list_scale + v0));
                        __mmask16 above = _mm512_mask_cmp_ps_mask(valid, s, _mm512_set1_ps(threshold[q]), _CMP_GT_OQ);
                        if (!above) continue;
                        float v[16];
                        _mm512_storeu_ps(v, s);
                        while (above) {
                            int e = __builtin_ctz(above);
                            above &= above - 1;
                            if (v[e] > threshold[q]) {
                                heap_replace_top(hv, hp, k, v[e], first_block * 16 + v0 + e);
                                threshold[q] = hv[0];
                            }
                        }
                    }
                }
            }
        }
        _tile_release();
        free(threshold); free(scores); free(a_rows);
    }
    return 0;
}

/* The threads' candidates of each query, mapped to ids, scored exactly (float32), best k_out first. */
void rerank(const float* vectors, const float* queries, const int64_t* cand_pos, const int64_t* padded_ids,
            int dims, int threads, int nq, int k, int k_out, int64_t* out_ids) {
    #pragma omp parallel for schedule(static)
    for (int i = 0; i < nq; i++) {
        float best[64];
        int64_t best_id[64];
        int kept = 0;
        for (int t = 0; t < threads; t++)
            for (int j = 0; j < k; j++) {
                int64_t p = cand_pos[((int64_t)t * nq + i) * k + j];
                if (p < 0) continue;
                int64_t id = padded_ids[p];
                const float* x = vectors + id * dims;
                const float* q = queries + (int64_t)i * dims;
                __m512 acc = _mm512_setzero_ps();
                for (int d = 0; d < dims; d += 16)
                    acc = _mm512_fmadd_ps(_mm512_loadu_ps(x + d), _mm512_loadu_ps(q + d), acc);
                float s = _mm512_reduce_add_ps(acc);
                int slot = kept;
                if (kept < k_out) kept++;
                else {
                    slot = 0;
                    for (int u = 1; u < k_out; u++) if (best[u] < best[slot]) slot = u;
                    if (s <= best[slot]) continue;
                }
                best[slot] = s; best_id[slot] = id;
            }
        for (int a = 0; a < kept; a++)
            for (int b = a + 1; b < kept; b++)
                if (best[b] > best[a]) {
                    float f = best[a]; best[a] = best[b]; best[b] = f;
                    int64_t h = best_id[a]; best_id[a] = best_id[b]; best_id[b] = h;
                }
        for (int a = 0; a < k_out; a++) out_ids[(int64_t)i * k_out + a] = a < kept ? best_id[a] : -1;
    }
}
