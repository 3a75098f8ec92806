/*!
 * \file match.h
 * \brief Anchor <-> ground-truth matching and hard-negative sampling (std only). Every per-anchor
 *        and per-ground-truth step is a host/device function that the CPU loops below and the
 *        CUDA kernels (multibox_target.cu, rpn_target.cu, proposal_target.cu) both call.
 *
 * Matching and sampling are separate steps so that other target operators (an FPN RPN target
 * with balanced sampling, a proposal target) can reuse the matcher with another sampler.
 *
 * The result of matching is one int per anchor:
 *   >= 0         index of the ground truth the anchor is matched to (a positive),
 *   kUnmatched   matched to nothing: a background candidate,
 *   kIgnored     excluded from the losses (set by a sampler).
 *
 * Matching, as in SSD (Liu et al. 2016) and MXNet's contrib.MultiBoxTarget:
 *  1. ScanOverlaps: for every anchor, its best ground truth (highest IoU, the lowest index on
 *     ties) and, for every ground truth, its best anchor (highest IoU, lowest anchor index).
 *  2. ClaimBestAnchors: bipartite step. Repeatedly the (anchor, ground truth) pair with the
 *     highest IoU among free anchors and unclaimed ground truths is matched (ties: lowest anchor
 *     index, then lowest ground-truth index), until every ground truth has claimed an anchor or
 *     no pair has IoU > kMinClaimIoU.
 *  3. MatchAboveThreshold: every other anchor whose best IoU is > threshold matches its best
 *     ground truth.
 * Sampling:
 *  SelectHardNegatives: of the unmatched anchors whose best IoU is < a threshold, keep the
 *  `count` with the lowest score (for SSD the background probability: the hardest negatives;
 *  ties by lowest anchor index, NaN ranks last; common/select.h); every other unmatched anchor
 *  becomes kIgnored.
 *
 * Faster R-CNN matching (RPNTarget): ScanBestOverlaps and AssignByIoU, described at their
 * definitions below.
 *
 * IoU is BoxIoU(anchor, gt) of common/bbox.h; a NaN IoU never wins a comparison.
 */
#ifndef SSDKIT_COMMON_MATCH_H_
#define SSDKIT_COMMON_MATCH_H_

#include <cstdint>
#include <vector>

#include "common/bbox.h"
#include "common/select.h"

namespace ssdkit {
namespace match {

constexpr int kUnmatched = -1;  //!< no ground truth: background candidate
constexpr int kIgnored = -2;    //!< neither positive nor negative

/*! \brief A ground truth claims an anchor only when their IoU is above this. */
constexpr float kMinClaimIoU = 1e-6f;

/*! \brief Best anchor of one ground truth: highest IoU, lowest anchor index on ties. */
struct GtBest {
  float iou = -1.f;
  int anchor = -1;
};

/*! \brief Offer anchor j (IoU `iou`) to a best-anchor search visiting anchors in ascending order:
 *  it wins only with a strictly higher IoU (a NaN IoU never wins), so ties keep the lower index. */
SSDKIT_HD void ConsiderAnchor(float iou, int j, GtBest* best) {
  if (iou > best->iou) {
    best->iou = iou;
    best->anchor = j;
  }
}

/*! \brief Fold `other` (covering higher anchor indices) into `into`: the lower index wins ties. */
SSDKIT_HD void MergeGtBest(const GtBest& other, GtBest* into) {
  if (other.iou > into->iou) *into = other;
}

/*!
 * \brief Step 1 for one anchor j (box `a`): its best ground truth (highest IoU, lowest index on
 *  ties; (-1, -1) when G == 0) and, with kTrackGts, its offer to every ground truth's best-anchor
 *  search (gt_best, anchors visited in ascending order).
 */
template <bool kTrackGts>
SSDKIT_HD void ScanAnchorOverlaps(const float* a, int j, const float* gts, int num_gt, float* best_iou,
                                  int* best_gt, GtBest* gt_best) {
  float bi = -1.f;
  int bg = -1;
  for (int g = 0; g < num_gt; ++g) {
    const float iou = BoxIoU(a, gts + 4 * g);
    if (iou > bi) {
      bi = iou;
      bg = g;
    }
    if (kTrackGts) ConsiderAnchor(iou, j, gt_best + g);
  }
  *best_iou = bi;
  *best_gt = bg;
}

/*!
 * \brief Step 1 over anchors [begin, end).
 * \param anchors   (N, 4) corners
 * \param gts       (G, 4) corners of the valid ground truths
 * \param best_iou  (N,) out: highest IoU of each anchor, -1 when G == 0
 * \param best_gt   (N,) out: its ground truth (lowest index on ties), -1 when G == 0
 * \param gt_best   (G,) out: best anchor of each ground truth within the range
 */
inline void ScanOverlaps(const float* anchors, int begin, int end, const float* gts, int num_gt,
                         float* best_iou, int* best_gt, GtBest* gt_best) {
  for (int g = 0; g < num_gt; ++g) gt_best[g] = GtBest();
  for (int j = begin; j < end; ++j) {
    ScanAnchorOverlaps<true>(anchors + 4 * static_cast<size_t>(j), j, gts, num_gt, best_iou + j, best_gt + j,
                             gt_best);
  }
}

/*!
 * \brief One round of step 2: the unclaimed ground truth whose best free anchor has the highest IoU
 *  (> kMinClaimIoU; ties: lowest anchor index, then lowest ground-truth index), or -1 when none.
 */
SSDKIT_HD int PickNextClaim(const GtBest* gt_best, const unsigned char* claimed, int num_gt) {
  int pick = -1;
  float pick_iou = kMinClaimIoU;
  int pick_anchor = -1;
  for (int g = 0; g < num_gt; ++g) {
    if (claimed[g]) continue;
    const GtBest& b = gt_best[g];
    if (b.iou > pick_iou || (pick >= 0 && b.iou == pick_iou && b.anchor < pick_anchor)) {
      pick = g;
      pick_iou = b.iou;
      pick_anchor = b.anchor;
    }
  }
  return pick;
}

/*! \brief After a claim of `taken_anchor`: must unclaimed ground truth g search its best free anchor again? */
SSDKIT_HD bool NeedsNewBestAnchor(const GtBest& best, bool claimed, int taken_anchor) {
  return !claimed && best.anchor == taken_anchor;
}

/*!
 * \brief Step 2, the bipartite claim.
 * \param gt_best  (G,) best anchor of every ground truth over all N anchors (from ScanOverlaps);
 *                 used as scratch and left undefined
 * \param match    (N,) in: kUnmatched everywhere; out: claimed anchors hold their ground truth
 * \return the number of anchors claimed
 */
inline int ClaimBestAnchors(const float* anchors, int num_anchors, const float* gts, int num_gt,
                            GtBest* gt_best, int* match) {
  std::vector<unsigned char> claimed(num_gt, 0);
  int num_claimed = 0;
  while (true) {
    const int pick = PickNextClaim(gt_best, claimed.data(), num_gt);
    if (pick < 0) break;
    const int pick_anchor = gt_best[pick].anchor;
    claimed[pick] = 1;
    match[pick_anchor] = pick;
    ++num_claimed;
    // Ground truths whose best anchor was just taken look for their best free anchor.
    for (int g = 0; g < num_gt; ++g) {
      if (!NeedsNewBestAnchor(gt_best[g], claimed[g] != 0, pick_anchor)) continue;
      GtBest b;
      const float* box = gts + 4 * g;
      for (int j = 0; j < num_anchors; ++j) {
        if (match[j] >= 0) continue;
        ConsiderAnchor(BoxIoU(anchors + 4 * static_cast<size_t>(j), box), j, &b);
      }
      gt_best[g] = b;
    }
  }
  return num_claimed;
}

/*! \brief Step 3 for one anchor: not matched yet, and its best IoU is > `threshold`. */
SSDKIT_HD bool MatchesAboveThreshold(int match, int best_gt, float best_iou, float threshold) {
  return match < 0 && best_gt >= 0 && best_iou > threshold;
}

/*!
 * \brief Step 3: anchors not yet matched whose best IoU is > `threshold` match their best gt.
 * \return the number of anchors matched here
 */
inline int MatchAboveThreshold(const float* best_iou, const int* best_gt, int num_anchors,
                               float threshold, int* match) {
  int count = 0;
  for (int j = 0; j < num_anchors; ++j) {
    if (MatchesAboveThreshold(match[j], best_gt[j], best_iou[j], threshold)) {
      match[j] = best_gt[j];
      ++count;
    }
  }
  return count;
}

/*! \brief Sampling: may an unmatched anchor (best IoU `best_iou`) be a negative at all? */
SSDKIT_HD bool IsNegativeCandidate(float best_iou, float iou_threshold) { return best_iou < iou_threshold; }

/*! \brief Sampling: rank key of a negative candidate, smallest = hardest (common/select.h
 *  AscendingKey of its score: lowest score first, NaN last, ties by anchor index). */
SSDKIT_HD uint32_t NegativeKey(float score) { return select::AscendingKey(score); }

/*! \brief Reusable buffers of SelectHardNegatives (avoids an allocation per image). */
struct NegativeScratch {
  std::vector<uint32_t> keys;  // (candidates,) NegativeKey of each candidate
  std::vector<int> anchors;    // (candidates,) their anchor indices, ascending
};

/*!
 * \brief Sampling: keep the `count` hardest unmatched anchors as negatives, ignore the others.
 *  The selection is common/select.h's radix select (SelectSmallestK), the one the GPU kernel runs
 *  block-wide (BlockSelectSmallestK).
 * \param best_iou    (N,) best IoU of each anchor; only anchors with best_iou < iou_threshold
 *                    are candidates
 * \param score       (N,) lower = harder (e.g. background probability); NaN ranks last
 * \param count       negatives wanted; fewer are kept when there are fewer candidates
 * \param scratch     reused buffers
 * \param match       (N,) in: matching result; out: kept negatives stay kUnmatched, every other
 *                    unmatched anchor becomes kIgnored, positives are untouched
 * \return the number of negatives kept
 */
inline int SelectHardNegatives(const float* best_iou, const float* score, int num_anchors,
                               float iou_threshold, int count, NegativeScratch* scratch, int* match) {
  scratch->keys.clear();
  scratch->anchors.clear();
  for (int j = 0; j < num_anchors; ++j) {
    if (match[j] != kUnmatched) continue;
    match[j] = kIgnored;
    if (IsNegativeCandidate(best_iou[j], iou_threshold)) {
      scratch->keys.push_back(NegativeKey(score[j]));
      scratch->anchors.push_back(j);
    }
  }
  const int* anchors = scratch->anchors.data();
  return select::SelectSmallestK(scratch->keys.data(), static_cast<int>(scratch->keys.size()), count,
                                 [&](int i) { match[anchors[i]] = kUnmatched; });
}

// ---------------------------------------------------------------------------------------------
// Faster R-CNN (RPN) matching: IoU thresholds plus every ground truth's best anchors.
//  1. ScanBestOverlaps: over the usable anchors, each anchor's best ground truth (highest IoU,
//     lowest index on ties) and each ground truth's highest IoU (gt_max).
//  2. AssignByIoU, per anchor: positive (matched to its best ground truth) if its best IoU is
//     >= positive_iou, or if it is one of the best anchors of some ground truth (IoU equal to
//     that gt_max, every tie, when gt_max > 0: the "low-quality" matches of Detectron); else a
//     negative candidate (kUnmatched) if its best IoU is < negative_iou; else kIgnored.
//     Unusable anchors (e.g. crossing the image border) are kIgnored and take part in nothing.
//  A positive's box target is its own best ground truth, also when it became positive as the best
//  anchor of another one (as Detectron, torchvision and GluonCV do).
// ---------------------------------------------------------------------------------------------

/*!
 * \brief Step 1 over anchors [begin, end).
 * \param usable    (N,) nonzero for anchors that take part in matching
 * \param best_iou  (N,) out: an anchor's highest IoU (0 when G == 0), -1 if not usable
 * \param best_gt   (N,) out: its ground truth (lowest index on ties), -1 if none
 * \param gt_max    (G,) out: highest IoU of each ground truth over the usable anchors of the range
 *                  (-1 if the range has none); a NaN IoU never wins
 */
SSDKIT_HD void ScanBestOverlaps(const float* anchors, const unsigned char* usable, int begin, int end,
                                const float* gts, int num_gt, float* best_iou, int* best_gt,
                                float* gt_max) {
  for (int g = 0; g < num_gt; ++g) gt_max[g] = -1.f;
  for (int j = begin; j < end; ++j) {
    if (!usable[j]) {
      best_iou[j] = -1.f;
      best_gt[j] = -1;
      continue;
    }
    const float* a = anchors + 4 * static_cast<size_t>(j);
    float bi = num_gt > 0 ? -1.f : 0.f;
    int bg = -1;
    for (int g = 0; g < num_gt; ++g) {
      const float iou = BoxIoU(a, gts + 4 * g);
      if (iou > bi) {
        bi = iou;
        bg = g;
      }
      if (iou > gt_max[g]) gt_max[g] = iou;
    }
    if (bg < 0) bi = 0.f;  // every IoU was NaN
    best_iou[j] = bi;
    best_gt[j] = bg;
  }
}

/*! \brief One usable anchor's best ground truth, the values ScanBestOverlaps writes for it:
 *  highest IoU (a NaN IoU never wins), lowest index on ties; (0, -1) when there is none. */
SSDKIT_HD void BestOverlap(const float* anchor, const float* gts, int num_gt, float* best_iou, int* best_gt) {
  float bi;
  ScanAnchorOverlaps<false>(anchor, 0, gts, num_gt, &bi, best_gt, nullptr);
  *best_iou = *best_gt < 0 ? 0.f : bi;
}

/*! \brief True if `anchor` (best IoU `best_iou`) is a best anchor of some ground truth: its IoU
 *  with ground truth g equals gt_max[g] > 0. */
SSDKIT_HD bool IsBestAnchorOfSomeGt(const float* anchor, float best_iou, const float* gts, int num_gt,
                                    const float* gt_max) {
  for (int g = 0; g < num_gt; ++g) {
    const float m = gt_max[g];
    if (m > 0.f && m <= best_iou && BoxIoU(anchor, gts + 4 * g) == m) return true;
  }
  return false;
}

/*! \brief Step 2 for one anchor: its ground truth (>= 0), kUnmatched or kIgnored (see above). */
SSDKIT_HD int AssignByIoU(const float* anchor, bool usable, float best_iou, int best_gt,
                          const float* gts, int num_gt, const float* gt_max, float positive_iou,
                          float negative_iou) {
  if (!usable) return kIgnored;
  if (best_gt >= 0 &&
      (best_iou >= positive_iou || IsBestAnchorOfSomeGt(anchor, best_iou, gts, num_gt, gt_max))) {
    return best_gt;
  }
  return best_iou < negative_iou ? kUnmatched : kIgnored;
}

}  // namespace match
}  // namespace ssdkit

#endif  // SSDKIT_COMMON_MATCH_H_
