package realcp

import (
	"context"
	"io"
	"net"
	"sync"
)

// etcdProxy listens on 127.0.0.1:2379 inside a master's namespace and
// forwards to the lab's etcd: the master's apiserver sees a local etcd, as
// with kubeadm's stacked etcd, and stop makes that etcd vanish for this
// master alone (its connections close, new ones are refused) while the other
// masters keep theirs.
type etcdProxy struct {
	ns    string
	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

const proxyListen = "127.0.0.1:2379"

// start listens (again). Starting a running proxy does nothing.
func (p *etcdProxy) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		return nil
	}
	ln, err := listenIn(p.ns, proxyListen)
	if err != nil {
		return err
	}
	p.ln = ln
	if p.conns == nil {
		p.conns = map[net.Conn]struct{}{}
	}
	p.wg.Add(1)
	go p.accept(ln)
	return nil
}

func (p *etcdProxy) accept(ln net.Listener) {
	defer p.wg.Done()
	dial := dialIn(LabNS)
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			up, err := dial(context.Background(), "tcp", proxyListen)
			if err != nil {
				c.Close()
				return
			}
			if !p.track(c, up) {
				return
			}
			done := make(chan struct{}, 2)
			pipe := func(dst, src net.Conn) {
				io.Copy(dst, src)
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.CloseWrite()
				}
				done <- struct{}{}
			}
			go pipe(up, c)
			go pipe(c, up)
			<-done
			<-done
			p.untrack(c, up)
		}()
	}
}

// track registers a proxied pair; false (and both closed) when the proxy
// was stopped meanwhile.
func (p *etcdProxy) track(c ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		for _, x := range c {
			x.Close()
		}
		return false
	}
	for _, x := range c {
		p.conns[x] = struct{}{}
	}
	return true
}

func (p *etcdProxy) untrack(c ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, x := range c {
		x.Close()
		delete(p.conns, x)
	}
}

// stop closes the listener and every proxied connection, as the kernel
// closes a killed etcd's. Stopping a stopped proxy does nothing.
func (p *etcdProxy) stop() {
	p.mu.Lock()
	ln := p.ln
	p.ln = nil
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	if ln != nil {
		ln.Close()
		p.wg.Wait()
	}
}

// running reports whether the proxy listens.
func (p *etcdProxy) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ln != nil
}
