import asyncio, time
from playwright.async_api import async_playwright
from secsync.servers.broker import Broker
from secsync.apps.webdemo import WebDemo

async def main():
    async with Broker() as broker:
        demo = await WebDemo(broker).start()
        async with async_playwright() as p:
            b = await p.chromium.launch(executable_path="/usr/lib/chromium/chromium", args=["--no-sandbox"])
            page = await b.new_page()
            page.on("console", lambda m: print("CONSOLE", m.type, m.text[:200]))
            page.on("pageerror", lambda e: print("PAGEERROR", e)); page.on("response", lambda r: print("RESP", r.status, r.url[:80]))
            await page.goto(demo.url + "&name=Chromium")
            await page.wait_for_function("document.querySelector('#editor') && document.querySelector('#editor').value.includes('hello from the backend')", timeout=20000)
            print("browser sees python text")
            await page.click("#editor")
            await page.keyboard.press("End")
            await page.keyboard.type("Browser: typed in chromium.")
            t0 = time.monotonic()
            while "typed in chromium" not in str(demo.text) and time.monotonic() - t0 < 20:
                await asyncio.sleep(0.1)
            print("python text:", repr(str(demo.text)))
            await page.wait_for_timeout(2500)
            print("people:", await page.inner_text("#people"))
            print("stored:", (await page.inner_text("#stored"))[:300])
            await page.screenshot(path="/tmp/webdemo.png", full_page=True)
            await b.close()
        await demo.stop()
asyncio.run(main())
