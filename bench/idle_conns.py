#!/usr/bin/env python3
"""Opens N WebSocket connections (raw handshake), optionally tunes each to
station "mem", and holds them HOLD seconds. Used by bench/memory.sh."""
import asyncio, os, sys, json, struct
N=int(sys.argv[1]); port=int(sys.argv[2]); tune=len(sys.argv)>3
def frame(obj):
    p=json.dumps(obj).encode(); mask=os.urandom(4)
    hdr=bytes([0x81, 0x80|len(p)])+mask
    return hdr+bytes(b^mask[i%4] for i,b in enumerate(p))
async def one(i, conns):
    r,w=await asyncio.open_connection('127.0.0.1',port, local_addr=('127.0.0.%d'%(1+i%50),0))
    w.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    await w.drain()
    await r.readuntil(b"\r\n\r\n")
    if tune:
        w.write(frame({"type":"tune_in","station":"mem"})); await w.drain()
    conns.append((r,w))
async def main():
    conns=[]
    sem=asyncio.Semaphore(200)
    async def g(i):
        async with sem: await one(i,conns)
    await asyncio.gather(*[g(i) for i in range(N)])
    print("connected",len(conns),flush=True)
    await asyncio.sleep(float(os.environ.get("HOLD","8")))
asyncio.run(main())
