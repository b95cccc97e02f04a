/**
 * The Vulkan devices this machine exposes (the layer Dawn, and so ORT's WebGPU provider, runs on): name,
 * type, API and driver version, and the driver's own name and info string. Read with koffi straight from
 * the Vulkan loader (libvulkan.so.1), because ORT does not say which adapter it picked.
 *
 * Layouts follow the Khronos vulkan_core.h (1.2): VkApplicationInfo, VkInstanceCreateInfo,
 * VkPhysicalDeviceProperties (apiVersion, driverVersion, vendorID, deviceID, deviceType, deviceName[256] at
 * offset 20; 824 bytes on LP64), VkPhysicalDeviceProperties2 (sType, pNext, properties at offset 16) and
 * VkPhysicalDeviceDriverProperties (sType, pNext, driverID, driverName[256] at 20, driverInfo[256] at 276).
 * Memory is Node Buffers whose addresses koffi gives; they stay referenced until the calls return.
 */
import koffi from 'koffi';

export interface VulkanDevice {
  readonly name: string;
  readonly type: 'other' | 'integrated-gpu' | 'discrete-gpu' | 'virtual-gpu' | 'cpu';
  readonly apiVersion: string;
  readonly driverName?: string;
  readonly driverInfo?: string;
}
export type VulkanInfo = { readonly ok: true; readonly devices: readonly VulkanDevice[] } | { readonly ok: false; readonly reason: string };

const TYPES = ['other', 'integrated-gpu', 'discrete-gpu', 'virtual-gpu', 'cpu'] as const;
const VK_STYPE_APPLICATION_INFO = 0, VK_STYPE_INSTANCE_CREATE_INFO = 1;
const VK_STYPE_PHYSICAL_DEVICE_PROPERTIES_2 = 1000059001, VK_STYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES = 1000196000;
const API_1_2 = (1 << 22) | (2 << 12);
const version = (v: number) => `${v >>> 22}.${(v >>> 12) & 0x3ff}.${v & 0xfff}`;
const cstr = (b: Buffer, at: number, max: number) => { const s = b.subarray(at, at + max); const z = s.indexOf(0); return s.subarray(0, z < 0 ? max : z).toString('utf8'); };

let cached: VulkanInfo | undefined;

/** Never throws: a machine without a loader or a device gets the reason. */
export function vulkanDevices(): VulkanInfo {
  return (cached ??= query());
}

function query(): VulkanInfo {
  let lib: ReturnType<typeof koffi.load>;
  try {
    lib = koffi.load('libvulkan.so.1');
  } catch (e) {
    return { ok: false, reason: `the Vulkan loader libvulkan.so.1 does not load (${(e as Error).message.split('\n')[0]})` };
  }
  const createInstance = lib.func('int32_t vkCreateInstance(void *info, void *alloc, _Out_ void **instance)');
  const destroyInstance = lib.func('void vkDestroyInstance(void *instance, void *alloc)');
  const enumerate = lib.func('int32_t vkEnumeratePhysicalDevices(void *instance, _Inout_ uint32_t *count, void *devices)');
  const properties2 = lib.func('void vkGetPhysicalDeviceProperties2(void *device, void *props)');

  const appName = Buffer.from('nanomind\0');
  const app = Buffer.alloc(48); // VkApplicationInfo: sType, pNext, pApplicationName@16, appVersion@24, pEngineName@32, engineVersion@40, apiVersion@44
  app.writeUInt32LE(VK_STYPE_APPLICATION_INFO, 0);
  app.writeBigUInt64LE(koffi.address(appName), 16);
  app.writeUInt32LE(API_1_2, 44);
  const info = Buffer.alloc(64); // VkInstanceCreateInfo: sType, pNext, flags, pApplicationInfo, layer/extension counts and lists
  info.writeUInt32LE(VK_STYPE_INSTANCE_CREATE_INFO, 0);
  info.writeBigUInt64LE(koffi.address(app), 24);
  const out: unknown[] = [null];
  const rc = createInstance(info, null, out) as number;
  if (rc !== 0) return { ok: false, reason: `vkCreateInstance failed (VkResult ${rc}): no Vulkan driver (ICD) is installed` };
  const instance = out[0];
  try {
    const count = [0];
    enumerate(instance, count, null);
    if (!count[0]) return { ok: false, reason: 'Vulkan loads but reports no physical device' };
    const handles = Buffer.alloc(8 * count[0]);
    enumerate(instance, count, handles);
    const devices: VulkanDevice[] = [];
    for (let i = 0; i < count[0]; i++) {
      const driver = Buffer.alloc(536);
      driver.writeUInt32LE(VK_STYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES, 0);
      const props = Buffer.alloc(16 + 1024);
      props.writeUInt32LE(VK_STYPE_PHYSICAL_DEVICE_PROPERTIES_2, 0);
      props.writeBigUInt64LE(koffi.address(driver), 8);
      properties2(handles.readBigUInt64LE(8 * i), props);
      const p = 16;
      devices.push({
        name: cstr(props, p + 20, 256), type: TYPES[props.readUInt32LE(p + 16)] ?? 'other', apiVersion: version(props.readUInt32LE(p)),
        driverName: cstr(driver, 20, 256) || undefined, driverInfo: cstr(driver, 276, 256) || undefined,
      });
    }
    return { ok: true, devices };
  } finally {
    destroyInstance(instance, null);
  }
}
