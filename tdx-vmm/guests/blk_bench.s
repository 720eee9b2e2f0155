# `tdx-vmm bench` virtio-blk guest, assembled by tdx-vmm's build.rs with GNU as: with
# `--defsym TD=1` the TD form (MMIO through TDG.VP.VMCALL<#VE.RequestMMIO> on the device's
# shared GPA, rings and buffers in MapGPA'd shared memory reached through the shared alias),
# without it the plain-VM form (MMIO by ordinary loads/stores, KVM_EXIT_MMIO; the same memory
# at its plain address). Parameters at GPA 0x105000: request count N (u64) and request size S
# (u64, bytes, multiple of 512, at most 64 KiB). Flow: device init (VERSION_1, plus
# ACCESS_PLATFORM in a TD), one 3-descriptor chain (header, S-byte data, status) built once,
# a marker write to port 0x80 (the bench's timing starts at its exit), N × {publish the chain
# in the avail ring, QueueNotify, check used.idx and status}, exit status 0 to port 0x501
# (1 if anything failed). Entered in 64-bit ring 0 at 0x100000 by the ELF payload contract.
.intel_syntax noprefix
.code64
.set BASE, 0xFEB00000
.ifdef TD
.set SH, 0xffff800000200000
.else
.set SH, 0x200000
.endif
.macro VMCALL_SETUP
  xor eax, eax
  mov ecx, 0xfc00
  xor r10d, r10d
.endm
.macro PORT_W port, val
.ifdef TD
  VMCALL_SETUP
  mov r11d, 30
  mov r12d, 1
  mov r13d, 1
  mov r14d, \port
  mov r15d, \val
  out 0xdc, al
.else
  mov dx, \port
  mov eax, \val
  out dx, al
.endif
.endm
.macro MMIO_W off, val
.ifdef TD
  VMCALL_SETUP
  mov r11d, 48
  mov r12d, 4
  mov r13d, 1
  movabs r14, 0x800000000000 + BASE + \off
  mov r15d, \val
  out 0xdc, al
  test r10, r10
  jnz fail
.else
  mov r14d, BASE + \off
  mov eax, \val
  mov dword ptr [r14], eax
.endif
.endm
.macro MMIO_R off
.ifdef TD
  VMCALL_SETUP
  mov r11d, 48
  mov r12d, 4
  xor r13d, r13d
  movabs r14, 0x800000000000 + BASE + \off
  xor r15d, r15d
  out 0xdc, al
  test r10, r10
  jnz fail
.else
  mov r14d, BASE + \off
  mov r11d, dword ptr [r14]
.endif
.endm
start:
.ifdef TD
  mov eax, 0x103007
  mov qword ptr [0x1800], rax
  mov rax, cr3
  mov cr3, rax
  VMCALL_SETUP
  mov r11d, 0x10001
  movabs r12, 0x800000200000
  mov r13d, 0x20000
  out 0xdc, al
  test r10, r10
  jnz fail
.endif
  MMIO_R 0
  cmp r11d, 0x74726976
  jne fail
  MMIO_W 0x70, 0
  MMIO_W 0x70, 1
  MMIO_W 0x70, 3
  MMIO_W 0x24, 0
  MMIO_W 0x20, 0
  MMIO_W 0x24, 1
.ifdef TD
  MMIO_W 0x20, 3
.else
  MMIO_W 0x20, 1
.endif
  MMIO_W 0x70, 0xb
  MMIO_R 0x70
  test r11d, 8
  jz fail
  MMIO_W 0x30, 0
  MMIO_W 0x38, 8
  MMIO_W 0x80, 0x200000
  MMIO_W 0x84, 0
  MMIO_W 0x90, 0x200100
  MMIO_W 0x94, 0
  MMIO_W 0xa0, 0x200200
  MMIO_W 0xa4, 0
  MMIO_W 0x44, 1
  MMIO_W 0x70, 0xf
  mov rbx, qword ptr [0x105000]
  mov r8, qword ptr [0x105008]
  movabs rdi, SH
  mov qword ptr [rdi], 0x200400
  mov dword ptr [rdi + 8], 16
  mov word ptr [rdi + 12], 1
  mov word ptr [rdi + 14], 1
  mov qword ptr [rdi + 16], 0x210000
  mov dword ptr [rdi + 24], r8d
  mov word ptr [rdi + 28], 3
  mov word ptr [rdi + 30], 2
  mov qword ptr [rdi + 32], 0x200420
  mov dword ptr [rdi + 40], 1
  mov word ptr [rdi + 44], 2
  mov word ptr [rdi + 46], 0
  mov dword ptr [rdi + 0x400], 0
  mov dword ptr [rdi + 0x404], 0
  mov qword ptr [rdi + 0x408], 0
  mov word ptr [rdi + 0x100], 1
  xor r9d, r9d
  PORT_W 0x80, 0
next:
  test rbx, rbx
  jz ok
  movabs rdi, SH
  mov eax, r9d
  and eax, 7
  mov word ptr [rdi + 0x104 + rax * 2], 0
  inc r9d
  mov word ptr [rdi + 0x102], r9w
  mov byte ptr [rdi + 0x420], 0xff
  MMIO_W 0x50, 0
  movabs rdi, SH
  cmp word ptr [rdi + 0x202], r9w
  jne fail
  cmp byte ptr [rdi + 0x420], 0
  jne fail
  dec rbx
  jmp next
ok:
  PORT_W 0x501, 0
  hlt
fail:
  PORT_W 0x501, 1
  hlt
