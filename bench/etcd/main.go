// etcd-bench: the etcd side of GeoScale's side-by-side benchmark.
//
// It drives an etcd cluster through clientv3 with the same plain KV
// workloads, options and JSON output as geoscale-bench:
//
//	kv-put  Put of a random key among --keys, a --value-size byte value
//	kv-get  Get of a random key among --keys (linearizable: clientv3's
//	        default); the keys are preloaded first
//
// Load. --clients goroutines issue requests one at a time over
// --connections clientv3 clients (goroutine i uses client i mod M; each
// clientv3 client is one gRPC connection, multiplexing its goroutines).
// Closed loop by default: a goroutine sends its next request as soon as
// the previous one completes. With --rate R the loop is open: the run has a
// fixed arrival schedule of R requests/s in total (goroutine i owns
// arrivals i, i+N, i+2N, ...), a request is sent at its intended time or,
// when the goroutine is late, at once; its latency counts from the
// intended time, so a slow server cannot hide queueing delay.
//
// Measurement. The first --warmup seconds are not recorded; then requests
// completing within the next --duration seconds are, if they were intended
// to start inside that window. Latencies go into a log-bucketed histogram
// (128 buckets per power of two: relative error below 0.4%), one per
// goroutine, merged at the end. Failed requests are counted by gRPC status
// code name and not recorded in the latency histogram.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/etcdserver/api/v3rpc/rpctypes"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ------------------------------------------------------------- options

type options struct {
	endpoints   []string
	workload    string
	keys        int
	valueSize   int
	clients     int
	connections int
	duration    time.Duration
	warmup      time.Duration
	rate        float64
	timeout     time.Duration
	jsonOut     bool
}

func parseOptions() options {
	var o options
	var endpoints string
	var duration, warmup, timeout float64
	fs := flag.NewFlagSet("etcd-bench", flag.ExitOnError)
	fs.StringVar(&endpoints, "endpoints", "127.0.0.1:2379", "comma-separated etcd client endpoints (host:port or URLs)")
	fs.StringVar(&o.workload, "workload", "kv-put", "kv-put or kv-get")
	fs.IntVar(&o.keys, "keys", 10000, "number of distinct keys")
	fs.IntVar(&o.valueSize, "value-size", 128, "value size in bytes")
	fs.IntVar(&o.clients, "clients", 64, "concurrent requesters (goroutines)")
	fs.IntVar(&o.connections, "connections", 8, "clientv3 clients (gRPC connections) the requesters share")
	fs.Float64Var(&duration, "duration", 10, "measured seconds")
	fs.Float64Var(&warmup, "warmup", 2, "unmeasured seconds before the measurement")
	fs.Float64Var(&o.rate, "rate", 0, "open loop: total requests/s on a fixed schedule (0: closed loop)")
	fs.Float64Var(&timeout, "timeout", 5, "per-request timeout in seconds")
	fs.BoolVar(&o.jsonOut, "json", false, "print one JSON object on stdout instead of a table")
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: etcd-bench [options]\n\nDrives etcd with geoscale-bench's plain KV workloads.\n\n")
		fs.PrintDefaults()
	}
	fs.Parse(os.Args[1:])
	if fs.NArg() != 0 {
		fail("unexpected argument %q", fs.Arg(0))
	}
	for _, e := range strings.Split(endpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			o.endpoints = append(o.endpoints, e)
		}
	}
	switch {
	case len(o.endpoints) == 0:
		fail("--endpoints: at least one endpoint")
	case o.workload != "kv-put" && o.workload != "kv-get":
		fail("--workload must be kv-put or kv-get, got %q", o.workload)
	case o.keys < 1:
		fail("--keys must be at least 1")
	case o.valueSize < 0 || o.valueSize > 1<<20:
		fail("--value-size must be from 0 to 1048576")
	case o.clients < 1:
		fail("--clients must be at least 1")
	case o.connections < 1:
		fail("--connections must be at least 1")
	case !(duration > 0) || duration > 86400:
		fail("--duration must be a positive number of seconds")
	case !(warmup >= 0) || warmup > 86400:
		fail("--warmup must be a number of seconds >= 0")
	case !(o.rate >= 0) || math.IsInf(o.rate, 0):
		fail("--rate must be >= 0")
	case !(timeout > 0):
		fail("--timeout must be positive")
	}
	if o.connections > o.clients {
		o.connections = o.clients
	}
	o.duration = time.Duration(duration * float64(time.Second))
	o.warmup = time.Duration(warmup * float64(time.Second))
	o.timeout = time.Duration(timeout * float64(time.Second))
	return o
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "etcd-bench: "+format+"\n", args...)
	os.Exit(2)
}

func keyOf(i int) string { return fmt.Sprintf("bench/%010d", i) }

// errorName is the gRPC status code name of a failed request
// ("Unavailable", "DeadlineExceeded", ...): clientv3 returns etcd's own
// errors (rpctypes.EtcdError, which carry a code), gRPC statuses and
// context errors.
func errorName(err error) string {
	switch e := err.(type) {
	case rpctypes.EtcdError:
		return e.Code().String()
	}
	if err == context.DeadlineExceeded {
		return codes.DeadlineExceeded.String()
	}
	if err == context.Canceled {
		return codes.Canceled.String()
	}
	if s, ok := status.FromError(err); ok {
		return s.Code().String()
	}
	return codes.Unknown.String()
}

// errorLog prints the first error of each kind on stderr, so that a count
// in the result can be traced to a message.
type errorLog struct {
	mu   sync.Mutex
	seen map[string]bool
}

func (l *errorLog) note(name string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.seen[name] {
		l.seen[name] = true
		fmt.Fprintf(os.Stderr, "etcd-bench: first %s error: %v\n", name, err)
	}
}

// --------------------------------------------------------------- run

type worker struct {
	hist   *histogram
	errors map[string]uint64
}

type result struct {
	System      string             `json:"system"`
	Workload    string             `json:"workload"`
	Mode        string             `json:"mode"`
	Clients     int                `json:"clients"`
	Connections int                `json:"connections"`
	Rate        float64            `json:"rate"`
	Keys        int                `json:"keys"`
	ValueSize   int                `json:"value_size"`
	DurationS   float64            `json:"duration_s"`
	Ops         uint64             `json:"ops"`
	Throughput  float64            `json:"throughput"`
	LatencyUs   map[string]float64 `json:"latency_us"`
	Errors      map[string]uint64  `json:"errors"`
}

func main() {
	signal.Ignore(syscall.SIGPIPE)
	o := parseOptions()

	// clientv3 logs every retried request at "warn"; errors are counted
	// (and the first of each kind printed) instead.
	logConfig := zap.NewProductionConfig()
	logConfig.Level = zap.NewAtomicLevelAt(zap.ErrorLevel)
	conns := make([]*clientv3.Client, o.connections)
	for i := range conns {
		c, err := clientv3.New(clientv3.Config{
			Endpoints:   o.endpoints,
			DialTimeout: 5 * time.Second,
			LogConfig:   &logConfig,
		})
		if err != nil {
			fmt.Fprintf(os.Stderr, "etcd-bench: connecting to %s: %v\n", strings.Join(o.endpoints, ","), err)
			os.Exit(1)
		}
		conns[i] = c
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()

	// Health: the cluster must answer a linearizable read before the run.
	{
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := conns[0].Get(ctx, "bench/health")
		cancel()
		if err != nil {
			fmt.Fprintf(os.Stderr, "etcd-bench: cluster not healthy: %v\n", err)
			os.Exit(1)
		}
	}

	value := make([]byte, o.valueSize)
	rnd := rand.New(rand.NewSource(1))
	for i := range value {
		value[i] = byte('a' + rnd.Intn(26))
	}
	sval := string(value)

	if o.workload == "kv-get" {
		if err := preload(conns, o, sval); err != nil {
			fmt.Fprintf(os.Stderr, "etcd-bench: preloading %d keys: %v\n", o.keys, err)
			os.Exit(1)
		}
	}

	var completed uint64 // every completed request, warm-up included
	start := time.Now()
	measureStart := start.Add(o.warmup)
	measureEnd := measureStart.Add(o.duration)
	stop := make(chan struct{})
	errLog := &errorLog{seen: map[string]bool{}}
	workers := make([]*worker, o.clients)
	var wg sync.WaitGroup
	for i := 0; i < o.clients; i++ {
		w := &worker{hist: newHistogram(), errors: map[string]uint64{}}
		workers[i] = w
		wg.Add(1)
		go func(i int, w *worker) {
			defer wg.Done()
			cli := conns[i%len(conns)]
			r := rand.New(rand.NewSource(int64(i) + 1))
			for k := 0; ; k++ {
				var intended time.Time
				if o.rate > 0 {
					// Arrival i + k*N of the whole schedule.
					offset := time.Duration((float64(i) + float64(k)*float64(o.clients)) / o.rate * float64(time.Second))
					intended = start.Add(offset)
					if d := time.Until(intended); d > 0 {
						select {
						case <-stop:
							return
						case <-time.After(d):
						}
					}
				} else {
					intended = time.Now()
				}
				select {
				case <-stop:
					return
				default:
				}
				key := keyOf(r.Intn(o.keys))
				ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
				var err error
				if o.workload == "kv-put" {
					_, err = cli.Put(ctx, key, sval)
				} else {
					var resp *clientv3.GetResponse
					resp, err = cli.Get(ctx, key)
					if err == nil && len(resp.Kvs) != 1 {
						err = status.Error(codes.NotFound, "preloaded key missing")
					}
				}
				cancel()
				done := time.Now()
				atomic.AddUint64(&completed, 1)
				if !intended.Before(measureStart) && done.Before(measureEnd) {
					if err != nil {
						name := errorName(err)
						w.errors[name]++
						errLog.note(name, err)
					} else {
						w.hist.record(int64(done.Sub(intended)))
					}
				}
				if !done.Before(measureEnd) {
					return
				}
			}
		}(i, w)
	}

	// Progress once a second; stop at the end of the window.
	ticker := time.NewTicker(time.Second)
	var last uint64
	lastT := start
	endTimer := time.NewTimer(time.Until(measureEnd))
loop:
	for {
		select {
		case now := <-ticker.C:
			c := atomic.LoadUint64(&completed)
			phase := "run"
			if now.Before(measureStart) {
				phase = "warmup"
			}
			fmt.Fprintf(os.Stderr, "etcd-bench: %5.1fs %-6s %9.0f ops/s\n",
				now.Sub(start).Seconds(), phase, float64(c-last)/now.Sub(lastT).Seconds())
			last, lastT = c, now
		case <-endTimer.C:
			break loop
		}
	}
	ticker.Stop()
	close(stop)
	wg.Wait()

	total := newHistogram()
	errs := map[string]uint64{}
	for _, w := range workers {
		total.merge(w.hist)
		for k, v := range w.errors {
			errs[k] += v
		}
	}
	mode := "closed"
	if o.rate > 0 {
		mode = "open"
	}
	us := func(ns float64) float64 { return math.Round(ns/1e3*10) / 10 }
	mean := 0.0
	if total.n > 0 {
		mean = total.sum / float64(total.n)
	}
	res := result{
		System:      "etcd",
		Workload:    o.workload,
		Mode:        mode,
		Clients:     o.clients,
		Connections: o.connections,
		Rate:        o.rate,
		Keys:        o.keys,
		ValueSize:   o.valueSize,
		DurationS:   o.duration.Seconds(),
		Ops:         total.n,
		Throughput:  math.Round(float64(total.n)/o.duration.Seconds()*10) / 10,
		LatencyUs: map[string]float64{
			"p50":  us(total.quantile(0.50)),
			"p90":  us(total.quantile(0.90)),
			"p99":  us(total.quantile(0.99)),
			"p999": us(total.quantile(0.999)),
			"max":  us(float64(total.max)),
			"mean": us(mean),
		},
		Errors: errs,
	}
	if o.jsonOut {
		printJSON(res)
	} else {
		printTable(res)
	}
}

// preload writes every key once, from at least 64 goroutines.
func preload(conns []*clientv3.Client, o options, value string) error {
	writers := o.clients
	if writers < 64 {
		writers = 64
	}
	next := int64(-1)
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	t0 := time.Now()
	for g := 0; g < writers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			cli := conns[g%len(conns)]
			for {
				i := atomic.AddInt64(&next, 1)
				if i >= int64(o.keys) {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
				_, err := cli.Put(ctx, keyOf(int(i)), value)
				cancel()
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
			}
		}(g)
	}
	wg.Wait()
	if firstErr == nil {
		fmt.Fprintf(os.Stderr, "etcd-bench: preloaded %d keys in %.1fs\n", o.keys, time.Since(t0).Seconds())
	}
	return firstErr
}

// printJSON writes the result with the keys in the documented order.
func printJSON(r result) {
	num := func(v float64) string {
		if v == math.Trunc(v) && math.Abs(v) < 1e15 {
			return fmt.Sprintf("%.1f", v)
		}
		return fmt.Sprintf("%g", v)
	}
	str := func(s string) string {
		b, _ := json.Marshal(s)
		return string(b)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `{"system":%s,"workload":%s,"mode":%s,"clients":%d,"connections":%d,"rate":%s,`,
		str(r.System), str(r.Workload), str(r.Mode), r.Clients, r.Connections, num(r.Rate))
	fmt.Fprintf(&b, `"keys":%d,"value_size":%d,"duration_s":%s,"ops":%d,"throughput":%s,`,
		r.Keys, r.ValueSize, num(r.DurationS), r.Ops, num(r.Throughput))
	b.WriteString(`"latency_us":{`)
	for i, k := range []string{"p50", "p90", "p99", "p999", "max", "mean"} {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "%s:%s", str(k), num(r.LatencyUs[k]))
	}
	b.WriteString(`},"errors":{`)
	names := make([]string, 0, len(r.Errors))
	for k := range r.Errors {
		names = append(names, k)
	}
	sort.Strings(names)
	for i, k := range names {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "%s:%d", str(k), r.Errors[k])
	}
	b.WriteString("}}\n")
	os.Stdout.WriteString(b.String())
}

func printTable(r result) {
	fmt.Printf("system      %s\n", r.System)
	fmt.Printf("workload    %s (%s loop", r.Workload, r.Mode)
	if r.Mode == "open" {
		fmt.Printf(", %.0f req/s offered", r.Rate)
	}
	fmt.Printf(")\n")
	fmt.Printf("clients     %d over %d connections\n", r.Clients, r.Connections)
	fmt.Printf("keys        %d, values of %d bytes\n", r.Keys, r.ValueSize)
	fmt.Printf("duration    %.1f s\n", r.DurationS)
	fmt.Printf("ops         %d\n", r.Ops)
	fmt.Printf("throughput  %.1f ops/s\n", r.Throughput)
	fmt.Printf("latency us  p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  mean %.1f\n",
		r.LatencyUs["p50"], r.LatencyUs["p90"], r.LatencyUs["p99"], r.LatencyUs["p999"],
		r.LatencyUs["max"], r.LatencyUs["mean"])
	if len(r.Errors) == 0 {
		fmt.Printf("errors      none\n")
		return
	}
	names := make([]string, 0, len(r.Errors))
	for k := range r.Errors {
		names = append(names, k)
	}
	sort.Strings(names)
	fmt.Printf("errors     ")
	for _, k := range names {
		fmt.Printf(" %s=%d", k, r.Errors[k])
	}
	fmt.Printf("\n")
}
