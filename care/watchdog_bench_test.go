package care

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/vipctl/vipctl/care/probe"
	"github.com/vipctl/vipctl/ipvs/ipvstest"
)

// BenchmarkWatchdogSecond is the loop's own work in one second of a steady
// watchdog at the defaults, three healthy masters: a probe result per
// master handled as Run handles it (the decision core, status, metrics, the
// next timer), one interval reconcile with the plumbing and
// interval/resync-period presence polls, against the in-memory kernel with
// JSON logs at info level as `vipctl care` writes them. The probes' own work
// (TLS, HTTP) and the kernel's are not in it. ns/op is thus nanoseconds of
// CPU per second of running: 1e7 ns/op would be 1 % of a core.
func BenchmarkWatchdogSecond(b *testing.B) {
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	log := zap.New(zapcore.NewCore(enc, zapcore.AddSync(io.Discard), zapcore.InfoLevel))
	mem, plumb := ipvstest.NewMemory(), ipvstest.NewMemoryPlumbing()
	cfg := testConfig(mA, mB, mC)
	w, err := New(cfg, Deps{Dataplane: mem, Plumbing: plumb, Closer: plumb, Prober: newFakeProber(), Log: log})
	require.NoError(b, err)
	ctx := context.Background()
	require.NoError(b, w.Once(ctx))
	polls := int(cfg.Health.Interval / cfg.ResyncPeriod)
	ok := probe.Result{OK: true, Status: 200, Reason: "HTTP 200", Latency: 2 * time.Millisecond}
	b.ReportAllocs()
	for b.Loop() {
		for _, m := range cfg.Masters {
			_, _, _ = schedule(w.clock.Now(), w.slots(), w.hedgeAfter(), cfg.Health.Interval) // the timer fires
			if w.observe(m, ok) {
				b.Fatal("a healthy master changed state")
			}
			_ = w.untilDue()
		}
		if err := w.reconcile(ctx, "interval", true); err != nil {
			b.Fatal(err)
		}
		for range polls {
			w.resync(ctx)
		}
	}
}
