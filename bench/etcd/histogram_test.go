package main

import (
	"math"
	"math/rand"
	"sort"
	"testing"
)

// Every value lands in a bucket that contains it, and the bucket's middle
// is within 0.5% of the value.
func TestBucketContainsValue(t *testing.T) {
	r := rand.New(rand.NewSource(7))
	for i := 0; i < 200000; i++ {
		v := int64(math.Exp(r.Float64() * 40)) // 1 ns .. ~2.3e17 ns
		b := bucketOf(v)
		lo, hi := bucketRange(b)
		if float64(v) < lo || float64(v) >= hi {
			t.Fatalf("value %d in bucket %d [%g, %g)", v, b, lo, hi)
		}
		if mid := (lo + hi) / 2; math.Abs(mid-float64(v)) > 0.005*float64(v)+0.5 {
			t.Fatalf("value %d: bucket middle %g is more than 0.5%% off", v, mid)
		}
	}
}

// Buckets are contiguous and increasing: bucket b+1 starts where b ends.
func TestBucketsContiguous(t *testing.T) {
	for b := 0; b < len(newHistogram().counts)-1; b++ {
		_, hi := bucketRange(b)
		lo2, _ := bucketRange(b + 1)
		if hi != lo2 {
			t.Fatalf("bucket %d ends at %g, bucket %d starts at %g", b, hi, b+1, lo2)
		}
	}
}

// Quantiles agree with the exact order statistics within 1%.
func TestQuantilesMatchExact(t *testing.T) {
	r := rand.New(rand.NewSource(11))
	h := newHistogram()
	vals := make([]int64, 100000)
	for i := range vals {
		vals[i] = int64(r.ExpFloat64()*2e6) + 50000 // ns, a latency-like tail
		h.record(vals[i])
	}
	sort.Slice(vals, func(i, j int) bool { return vals[i] < vals[j] })
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		exact := float64(vals[int(math.Ceil(q*float64(len(vals))))-1])
		got := h.quantile(q)
		if math.Abs(got-exact) > 0.01*exact {
			t.Errorf("q%.3f: got %g, exact %g", q, got, exact)
		}
	}
	if h.quantile(1) > float64(vals[len(vals)-1]) || h.max != vals[len(vals)-1] {
		t.Errorf("max: got %d / %g, exact %d", h.max, h.quantile(1), vals[len(vals)-1])
	}
}

// Merging two histograms equals recording everything into one.
func TestMerge(t *testing.T) {
	a, b, all := newHistogram(), newHistogram(), newHistogram()
	for i := int64(1); i < 5000; i++ {
		v := i * i
		if i%2 == 0 {
			a.record(v)
		} else {
			b.record(v)
		}
		all.record(v)
	}
	a.merge(b)
	if a.n != all.n || a.max != all.max || a.min != all.min || a.sum != all.sum {
		t.Fatalf("merged n/max/sum %d/%d/%g, want %d/%d/%g", a.n, a.max, a.sum, all.n, all.max, all.sum)
	}
	for i := range a.counts {
		if a.counts[i] != all.counts[i] {
			t.Fatalf("bucket %d: %d, want %d", i, a.counts[i], all.counts[i])
		}
	}
}

func TestEmpty(t *testing.T) {
	if q := newHistogram().quantile(0.99); q != 0 {
		t.Fatalf("empty histogram quantile %g", q)
	}
}
