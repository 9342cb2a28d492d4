// The batch list scan of retrieval/index/list_scan.py: an IVF index's lists scored in int8 on AMX tiles.
//
// Layout (built by the Python side): each list's vectors as int8 codes with one float scale per vector, in
// blocks of 16 vectors, dimensions zero-padded to a multiple of 64. A block is dims/4 rows of 64 bytes, row r
// holding dims 4r..4r+3 of its 16 vectors (AMX's VNNI layout), so a block's 16-row slices are the B tiles of
// TDPBSSD. The queries probing a list are taken 16 at a time as the A tile, so a list is read once a batch for
// up to 16 of its queries. Each thread keeps a min-heap of the `k` best slots per query; `rerank` keeps each
// query's best `k` of all threads' heaps and scores those exactly in float32.
//
// Threads are plain pthreads, not OpenMP: the process already holds faiss's and torch's OpenMP runtimes, and a
// third one spinning between calls takes cores from them.
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_THREADS 256
#define MAX_QUADS 256   /* dims / 4: up to 1024 dimensions */
#define MAX_CANDIDATES 64
#define LISTS_PER_GRAB 4

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

typedef struct {
    const uint32_t* codes; const float* scale; const int64_t* block_start; const int32_t* list_size;
    const int64_t* pair_start; const int32_t* pair_query; const uint32_t* queries;
    int quads, nq, nlist, k, max_list;
    float* out_value; int64_t* out_pos;
    int next_list;  /* shared work counter */
    int failed;
} scan_job;

typedef struct { scan_job* job; int thread; } scan_arg;

static void* scan_thread(void* p) {
    scan_arg* arg = p;
    scan_job* job = arg->job;
    const int quads = job->quads, nq = job->nq, k = job->k;
    float* heap_value = job->out_value + (int64_t)arg->thread * nq * k;
    int64_t* heap_pos = job->out_pos + (int64_t)arg->thread * nq * k;
    size_t stride_max = (size_t)(job->max_list + 31) / 32 * 32;
    float* threshold = aligned_alloc(64, sizeof(float) * (size_t)((nq + 15) / 16 * 16));
    int32_t* scores = aligned_alloc(64, sizeof(int32_t) * 16 * stride_max);
    uint32_t* a_rows = aligned_alloc(64, sizeof(uint32_t) * 16 * MAX_QUADS);
    if (!threshold || !scores || !a_rows) {
        __atomic_store_n(&job->failed, 1, __ATOMIC_RELAXED);
        free(threshold); free(scores); free(a_rows);
        return NULL;
    }
    for (int i = 0; i < nq; i++) threshold[i] = -1e30f;
    tile_config config;
    memset(&config, 0, sizeof config);
    config.palette_id = 1;
    for (int i = 0; i < 5; i++) { config.rows[i] = 16; config.colsb[i] = 64; }  /* C0 C1 A B0 B1 */
    _tile_loadconfig(&config);
    for (;;) {
        int first = __atomic_fetch_add(&job->next_list, LISTS_PER_GRAB, __ATOMIC_RELAXED);
        if (first >= job->nlist) break;
        int last = first + LISTS_PER_GRAB < job->nlist ? first + LISTS_PER_GRAB : job->nlist;
        for (int l = first; l < last; l++) {
            int n = job->list_size[l], blocks = (n + 15) / 16, stride = (blocks + 1) / 2 * 32;
            int64_t first_block = job->block_start[l];
            const float* list_scale = job->scale + first_block * 16;
            for (int64_t g = job->pair_start[l]; g < job->pair_start[l + 1]; g += 16) {
                int m = (int)(job->pair_start[l + 1] - g < 16 ? job->pair_start[l + 1] - g : 16);
                for (int j = 0; j < m; j++)
                    memcpy(a_rows + j * quads, job->queries + (int64_t)job->pair_query[g + j] * quads, quads * 4);
                if (m < 16) memset(a_rows + m * quads, 0, (size_t)(16 - m) * quads * 4);
                for (int b = 0; b < blocks; b += 2) {  /* two blocks per A tile load */
                    const uint32_t* b0 = job->codes + (first_block + b) * (int64_t)quads * 16;
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
                    _tile_stored(1, scores + (b + 1) * 16, stride * 4);  /* stride has room for an odd last block */
                }
                for (int j = 0; j < m; j++) {
                    int q = job->pair_query[g + j];
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
    }
    _tile_release();
    free(threshold); free(scores); free(a_rows);
    return NULL;
}

/* codes: blocks x quads x 16 uint32 (4 int8 each, quads = padded dims / 4, a multiple of 16); scale: one per
 * padded slot; block_start: nlist + 1; list_size: nlist (max_list the largest); pair_start: nlist + 1 offsets
 * into pair_query (the queries probing each list, by list); queries: nq x quads uint32 (int8 codes).
 * out_value / out_pos: threads x nq x k slots (-1: none), one heap per query and thread. Returns 0, or -1 for
 * arguments the kernel does not take, -2 when memory runs out. */
int scan(const uint32_t* codes, const float* scale, const int64_t* block_start, const int32_t* list_size,
         int max_list, const int64_t* pair_start, const int32_t* pair_query, const uint32_t* queries, int quads,
         int nq, int nlist, int k, int threads, float* out_value, int64_t* out_pos) {
    if (quads % 16 || quads > MAX_QUADS || k < 1 || k > MAX_CANDIDATES || threads < 1 || threads > MAX_THREADS)
        return -1;
    for (int64_t i = 0; i < (int64_t)threads * nq * k; i++) { out_value[i] = -1e30f; out_pos[i] = -1; }
    scan_job job = {codes, scale, block_start, list_size, pair_start, pair_query, queries,
                    quads, nq, nlist, k, max_list, out_value, out_pos, 0, 0};
    scan_arg args[MAX_THREADS];
    pthread_t ids[MAX_THREADS];
    int started = 0;
    for (int t = 1; t < threads; t++) {
        args[t] = (scan_arg){&job, t};
        if (pthread_create(&ids[t], NULL, scan_thread, &args[t]) != 0) break;  /* fewer threads: same results */
        started = t;
    }
    /* threads that did not start leave their heaps empty (every heap is merged by rerank) */
    args[0] = (scan_arg){&job, 0};
    scan_thread(&args[0]);
    for (int t = 1; t <= started; t++) pthread_join(ids[t], NULL);
    return job.failed ? -2 : 0;
}

typedef struct {
    const float* vectors; const float* queries; const float* cand_value; const int64_t* cand_pos;
    const int64_t* slot_ids; int dims, threads, nq, k, k_out, first, last;
    float* out_scores; int64_t* out_ids;
} rerank_job;

typedef struct { float value; int64_t pos; } candidate;

/* best int8 score first; equal scores by slot, so the kept set does not depend on which thread found what */
static int by_score(const void* a, const void* b) {
    const candidate *x = a, *y = b;
    if (x->value != y->value) return x->value < y->value ? 1 : -1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

static void* rerank_range(void* p) {
    rerank_job* job = p;
    const int dims = job->dims, k = job->k, k_out = job->k_out, pooled = job->threads * k;
    candidate* pool = malloc(sizeof(candidate) * (size_t)pooled);
    if (!pool) return pool;  /* rerank reports it */
    for (int i = job->first; i < job->last; i++) {
        int found = 0;
        for (int t = 0; t < job->threads; t++)  /* the threads' heaps: each holds its own best k */
            for (int j = 0; j < k; j++) {
                int64_t at = ((int64_t)t * job->nq + i) * k + j;
                if (job->cand_pos[at] >= 0) pool[found++] = (candidate){job->cand_value[at], job->cand_pos[at]};
            }
        qsort(pool, (size_t)found, sizeof(candidate), by_score);
        if (found > k) found = k;  /* the query's best k of all lists, whichever thread scanned them */
        float best[MAX_CANDIDATES];
        int64_t best_id[MAX_CANDIDATES];
        const float* q = job->queries + (int64_t)i * dims;
        for (int c = 0; c < found; c++) {
            int64_t id = job->slot_ids[pool[c].pos];
            const float* x = job->vectors + id * dims;
            __m512 acc = _mm512_setzero_ps();
            int d = 0;
            for (; d + 16 <= dims; d += 16)
                acc = _mm512_fmadd_ps(_mm512_loadu_ps(x + d), _mm512_loadu_ps(q + d), acc);
            float s = _mm512_reduce_add_ps(acc);
            for (; d < dims; d++) s += x[d] * q[d];
            best[c] = s; best_id[c] = id;
        }
        for (int a = 0; a < found; a++)  /* best first; ties by id, as faiss orders them */
            for (int b = a + 1; b < found; b++)
                if (best[b] > best[a] || (best[b] == best[a] && best_id[b] < best_id[a])) {
                    float f = best[a]; best[a] = best[b]; best[b] = f;
                    int64_t h = best_id[a]; best_id[a] = best_id[b]; best_id[b] = h;
                }
        for (int a = 0; a < k_out; a++) {
            job->out_scores[(int64_t)i * k_out + a] = a < found ? best[a] : -3.4028234663852886e38f;
            job->out_ids[(int64_t)i * k_out + a] = a < found ? best_id[a] : -1;
        }
    }
    free(pool);
    return job;  /* non-NULL: done */
}

/* Each query's best k candidates of the threads' heaps (cand_value / cand_pos: threads x nq x k from `scan`),
 * mapped to ids through slot_ids, scored exactly on the float32 `vectors` (row = id), best k_out first (score
 * -FLT_MAX, id -1 where fewer were found). Returns 0, -1 for arguments the kernel does not take, -2 when memory
 * runs out. */
int rerank(const float* vectors, const float* queries, const float* cand_value, const int64_t* cand_pos,
           const int64_t* slot_ids, int dims, int threads, int nq, int k, int k_out, float* out_scores,
           int64_t* out_ids) {
    if (k < 1 || k > MAX_CANDIDATES || k_out < 1 || k_out > k || threads < 1 || threads > MAX_THREADS) return -1;
    rerank_job jobs[MAX_THREADS];
    pthread_t ids[MAX_THREADS];
    void* done[MAX_THREADS] = {0};
    int per = (nq + threads - 1) / threads, started = 0;
    for (int t = 0; t < threads; t++) {
        int first = t * per < nq ? t * per : nq, last = (t + 1) * per < nq ? (t + 1) * per : nq;
        jobs[t] = (rerank_job){vectors, queries, cand_value, cand_pos, slot_ids, dims, threads, nq, k, k_out,
                               first, last, out_scores, out_ids};
    }
    for (int t = 1; t < threads; t++) {
        if (pthread_create(&ids[t], NULL, rerank_range, &jobs[t]) != 0) break;
        started = t;
    }
    done[0] = rerank_range(&jobs[0]);
    for (int t = started + 1; t < threads; t++) done[t] = rerank_range(&jobs[t]);  /* ranges whose thread did not start */
    for (int t = 1; t <= started; t++) pthread_join(ids[t], &done[t]);
    for (int t = 0; t < threads; t++) if (!done[t]) return -2;
    return 0;
}
