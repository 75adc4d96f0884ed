package main

import (
	"math"
	"math/bits"
)

// subBits sub-buckets per power of two: a value v >= 2^subBits falls in a
// bucket of width 2^(e-subBits) where 2^e <= v, i.e. a relative width of at
// most 2^-subBits. Reporting the bucket middle halves that.
const subBits = 7
const subCount = 1 << subBits

// histogram of durations in nanoseconds.
type histogram struct {
	counts []uint64 // index: bucketOf(ns)
	n      uint64
	sum    float64 // ns
	min    int64   // ns, exact; math.MaxInt64 while empty
	max    int64   // ns, exact
}

func newHistogram() *histogram {
	return &histogram{counts: make([]uint64, (64-subBits+1)*subCount), min: math.MaxInt64}
}

func bucketOf(v int64) int {
	if v < subCount {
		if v < 0 {
			v = 0
		}
		return int(v)
	}
	e := 63 - bits.LeadingZeros64(uint64(v)) // 2^e <= v, e >= subBits
	shift := uint(e - subBits)
	return (e-subBits+1)*subCount + int((uint64(v)>>shift)-subCount)
}

// bucketRange returns the smallest and one past the largest value of
// bucket b.
func bucketRange(b int) (lo, hi float64) {
	if b < subCount {
		return float64(b), float64(b + 1)
	}
	group := b/subCount - 1 // e - subBits
	sub := b % subCount
	width := math.Ldexp(1, group)
	lo = float64(subCount+sub) * width
	return lo, lo + width
}

func (h *histogram) record(ns int64) {
	h.counts[bucketOf(ns)]++
	h.n++
	h.sum += float64(ns)
	if ns > h.max {
		h.max = ns
	}
	if ns < h.min {
		h.min = ns
	}
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	if o.max > h.max {
		h.max = o.max
	}
	if o.min < h.min {
		h.min = o.min
	}
}

// quantile returns the value at quantile q (0..1) in ns: the middle of the
// bucket holding the ceil(q*n)-th smallest value, clamped to the exact min
// and max (the layout and rounding of bench/hist.c, geoscale-bench's).
func (h *histogram) quantile(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for b, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, hi := bucketRange(b)
			return math.Max(math.Min((lo+hi)/2, float64(h.max)), float64(h.min))
		}
	}
	return float64(h.max)
}
